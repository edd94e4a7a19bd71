"""The window's CPU use once a long run has been drawn: CPU seconds per second while it sits idle.

The real window (QtMainWindow on the Training tab) is given a whole run's events as the supervisor
relays them (the Training tab's handle_event, a few per 10 ms tick, ~2 s for 1,000 steps), left to
settle for a second and then left alone for --idle-seconds. Over that idle time it reports the process's
CPU time (all threads) per wall-clock second, the paint events on the Training tab's four plot
viewports, and the longest gap of a 20 ms probe timer (how long a click would wait). An idle window
should use next to no CPU and paint nothing.

Whether a plot falls into a repaint loop depends on its width in pixels and the number of points, so
every window width of --widths gets a fresh window (default 1070-1080: before the fix of issue 12,
item 9, a 1,000-step run left the Training tab's small plots repainting at 1075-1077).

    python benchmarks/ui_idle.py                          # a 1,000-step demo-like run, offscreen
    python benchmarks/ui_idle.py --steps 600 --widths 1180 --json
    python benchmarks/ui_idle.py --events RUN/events.jsonl  # replay a real run's events
    QT_QPA_PLATFORM=xcb python benchmarks/ui_idle.py      # on a desktop, painting to the screen

Target: under 0.02 CPU seconds per second and no paint at every width.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

TARGET_CPU_PER_S = 0.02
PROBE_MS = 20
EVENTS_PER_TICK, TICK_MS = 5, 10


def demo_like_events(steps: int) -> list[dict]:
    """A run as the demo writes it: warm-up then a flat learning rate, a falling loss, no tokens/s at step 1."""
    events = [{"event": "log", "time": 0.0, "pid": 1, "message": "Training process 1 started"},
              {"event": "started", "time": 1.0, "pid": 1, "total_steps": steps, "start_step": 0}]
    for n in range(1, steps + 1):
        events.append({"event": "step", "time": 1.0 + 0.04 * n, "step": n, "epoch": n / 5,
                       "loss": 0.02 + 7.5 * math.exp(-n / 60) + 0.05 * math.sin(n), "grad_norm": 0.3 + abs(math.sin(n / 7)),
                       "learning_rate": 3e-3 * min(1.0, n / 50), "tokens_per_second": None if n == 1 else 3000 + n % 17})
    events.append({"event": "finished", "time": 2.0 + 0.04 * steps, "status": "completed", "step": steps})
    return events


def parse_widths(text: str) -> list[int]:
    """"1176-1185" or "1180,1190" into window widths."""
    widths: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        widths.extend(range(int(low), int(high or low) + 1))
    return widths


def _run_loop(app, ms: float) -> None:
    """Run the event loop for `ms`, in slices of at most 50 ms of processing.

    Not QEventLoop.exec() with a quit timer: a repaint loop keeps the loop so busy that the timer never
    fires (as the window's own 200 ms timers did not), and the benchmark would hang instead of measuring.
    """
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.004)  # idle between slices: the figure is the window's CPU, not this loop's


def measure_width(app, store_dir: Path, events: list[dict], width: int, height: int, idle_s: float) -> dict:
    from PySide6.QtCore import QElapsedTimer, QEvent, QObject, QTimer

    from studio.core.system.gpu import HostTelemetry
    from studio.core.runs.store import RunStore
    from studio.ui.main_window import QtMainWindow

    window = QtMainWindow(store=RunStore(store_dir), telemetry=HostTelemetry(), offer_demo=False)
    window.resize(width, height)
    window.show()
    window.tabs.setCurrentWidget(window.training_tab)
    tab = window.training_tab
    plots = tab.metrics_plots
    widgets = [plots.loss_plot.plot_widget] + [plot.plot_widget for plot in plots.series_plots.values()]

    class PaintCounter(QObject):
        count = 0

        def eventFilter(self, watched, event):  # noqa: N802 - Qt API
            if event.type() == QEvent.Type.Paint:
                self.count += 1
            return False

    counter = PaintCounter()
    for widget in widgets:
        widget.viewport().installEventFilter(counter)
    _run_loop(app, 300)  # first paint, layout

    for start in range(0, len(events), EVENTS_PER_TICK):  # as the supervisor relays a growing events file
        for event in events[start:start + EVENTS_PER_TICK]:
            tab.handle_event(event)
        _run_loop(app, TICK_MS)
    _run_loop(app, 1000)  # the last redraws paint

    gaps: list[float] = []
    clock = QElapsedTimer()
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: (gaps.append(clock.restart() / 1.0)))
    counter.count = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    clock.start()
    probe.start()
    _run_loop(app, int(idle_s * 1000))
    probe.stop()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    result = {
        "width": width,
        "plot_view_widths": [int(w.getPlotItem().getViewBox().width()) for w in widgets],
        "cpu_s_per_s": round(cpu / wall, 4),
        "paints": counter.count,
        "max_probe_gap_ms": round(max(gaps), 1) if gaps else None,
        "steps_plotted": plots.step_point_count,
    }
    tab.shutdown()
    window.close()
    window.deleteLater()
    _run_loop(app, 50)
    return result


def measure(*, events: list[dict], widths: list[int], height: int = 780, idle_s: float = 3.0,
            workdir: Path | None = None) -> dict:
    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtWidgets import QApplication

    workdir = workdir or Path(tempfile.mkdtemp(prefix="ui-idle-"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("finetune-studio-benchmark")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(workdir / "qt-settings"))
    rows = []
    for width in widths:
        rows.append(measure_width(app, workdir / "runs", events, width, height, idle_s))
        print(f"width {width}: {rows[-1]['cpu_s_per_s']:.3f} CPU s/s idle, {rows[-1]['paints']} paints",
              file=sys.stderr, flush=True)  # progress: a sweep of a window that never settles is slow
    return {
        "steps": sum(1 for e in events if e.get("event") == "step"),
        "idle_seconds": idle_s,
        "max_cpu_s_per_s": max(row["cpu_s_per_s"] for row in rows),
        "widths_painting": sum(1 for row in rows if row["paints"]),
        "total_paints": sum(row["paints"] for row in rows),
        "target_cpu_s_per_s": TARGET_CPU_PER_S,
        "widths": rows,
    }


def markdown(result: dict) -> str:
    lines = ["| window width | plot views (px) | CPU s/s idle | paints idle | longest probe gap (ms) |",
             "| --- | --- | --- | --- | --- |"]
    for row in result["widths"]:
        lines.append(f"| {row['width']} | {', '.join(map(str, row['plot_view_widths']))} | {row['cpu_s_per_s']:.3f} "
                     f"| {row['paints']} | {row['max_probe_gap_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps of the demo-like run (default 1,000)")
    parser.add_argument("--events", type=Path, help="replay this events.jsonl instead")
    parser.add_argument("--widths", default="1070-1080", help="window widths, e.g. 1070-1080 or 1180,1366")
    parser.add_argument("--height", type=int, default=780, help="window height (default 780)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="idle time measured per width (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    workdir = Path(tempfile.mkdtemp(prefix="ui-idle-"))
    os.environ["FINETUNE_STUDIO_HOME"] = str(workdir / "home")  # never touch the user's runs or settings
    if args.events is not None:
        events = [json.loads(line) for line in args.events.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        events = demo_like_events(args.steps)
    result = measure(events=events, widths=parse_widths(args.widths), height=args.height,
                     idle_s=args.idle_seconds, workdir=workdir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
        print(f"\n{result['steps']} steps; worst idle CPU {result['max_cpu_s_per_s']:.3f} s/s "
              f"(target < {TARGET_CPU_PER_S}); {result['widths_painting']} of {len(result['widths'])} widths "
              f"still painting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
