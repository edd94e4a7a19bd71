"""The longest event-loop stall of the window while the demo trains, with every plot and the GPU panel live.

A QTimer probe fires every few milliseconds on the GUI thread; the time between two firings beyond
the interval is how long the event loop was blocked (a stall the user feels as a frozen window).
The window is the real one (QtMainWindow at 1180x780, on the Training tab): the loss, learning-rate,
grad-norm and tokens/s plots, the GPU panel sampling at 2 Hz, the log panel tailing train.log and the
supervisor relaying events.jsonl, from Start until the run has ended and the Runs view has refreshed.

    python benchmarks/ui_stall.py                      # offscreen, the demo's 60 steps
    python benchmarks/ui_stall.py --max-steps 300 --json
    QT_QPA_PLATFORM=xcb python benchmarks/ui_stall.py  # on a desktop, painting to the screen

Without an NVIDIA GPU the GPU panel is fed by a synthetic card (`--telemetry fake-gpu`, the default
there) so that all of its curves and labels update as they would on a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 50.0


class FakeGpuTelemetry:
    """A TelemetrySource with an 8 GiB card whose memory follows the training process's RAM."""

    has_gpu = True
    description = "Synthetic GPU (8.0 GiB) — benchmark stand-in"

    def __init__(self):
        from studio.core.system.gpu import HostTelemetry

        self._host = HostTelemetry()

    def read(self, pid):
        from studio.core.system.gpu import GpuReading

        host = self._host.read(pid)
        process = host.process_rss_bytes if host is not None else None
        used = 1_200_000_000 + (process or 0)
        return GpuReading(time=time.time(), device_name="Synthetic GPU", card_used_bytes=used,
                          card_total_bytes=8 * 1024**3, process_used_bytes=process, utilization_pct=87.0,
                          temperature_c=64.0, power_w=115.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=60, help="training steps of the demo run (default 60)")
    parser.add_argument("--probe-ms", type=int, default=5, help="probe timer interval (default 5 ms)")
    parser.add_argument("--telemetry", choices=("auto", "fake-gpu", "host", "nvml"), default="auto",
                        help="GPU panel source: auto = NVML if there is a GPU, else fake-gpu")
    parser.add_argument("--workdir", type=Path, help="where to build the demo and the run (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--trace", action="store_true", help="also list when each stall over 30 ms happened")
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ui-stall-"))
    os.environ["FINETUNE_STUDIO_HOME"] = str(workdir / "home")  # never touch the user's runs or settings

    from PySide6.QtCore import QCoreApplication, QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("finetune-studio-benchmark")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(workdir / "qt-settings"))

    from studio.core.config.settings import load_config
    from studio.core.system.demo import build_demo
    from studio.core.system.gpu import HostTelemetry, detect_telemetry
    from studio.core.config.presets import write_demo_config
    from studio.core.runs.store import RunStore
    from studio.ui.main_window import QtMainWindow

    assets = build_demo(workdir / "demo")
    write_demo_config(assets)
    config = load_config(assets.config_path)
    config.training.max_steps = args.max_steps

    telemetry = {"host": HostTelemetry, "fake-gpu": FakeGpuTelemetry, "nvml": detect_telemetry}.get(args.telemetry)
    source = telemetry() if telemetry else detect_telemetry()
    if args.telemetry == "auto" and not source.has_gpu:
        source = FakeGpuTelemetry()

    window = QtMainWindow(store=RunStore(workdir / "runs"), telemetry=source, offer_demo=False)
    window.resize(1180, 780)
    window.show()
    window.set_config(config)
    window.tabs.setCurrentWidget(window.training_tab)
    tab = window.training_tab

    gaps: list[float] = []
    trace: list[tuple[float, float]] = []  # (seconds since Start, stall ms)
    clock = QElapsedTimer()
    probe = QTimer()
    probe.setInterval(args.probe_ms)

    def on_probe() -> None:
        gap = clock.nsecsElapsed() / 1e6
        gaps.append(gap)
        clock.restart()
        if args.trace and gap - args.probe_ms > 30:
            trace.append((round(time.monotonic() - started, 2), round(gap - args.probe_ms, 1)))

    probe.timeout.connect(on_probe)
    done = {"ended": None}
    tab.run_ended.connect(lambda run, status, message: done.update(ended=time.monotonic(), status=status))

    def settle_then_quit() -> None:
        # Keep probing through the ending (adapter check, Runs view refresh) for two more seconds.
        if done["ended"] is not None and time.monotonic() - done["ended"] > 2.0:
            app.quit()

    watchdog = QTimer()
    watchdog.setInterval(100)
    watchdog.timeout.connect(settle_then_quit)

    def begin() -> None:
        clock.start()
        probe.start()
        watchdog.start()
        window.start_training()

    started = time.monotonic()
    QTimer.singleShot(500, begin)  # let the window settle (first paint, dataset read) before measuring
    app.exec()
    probe.stop()
    wall = time.monotonic() - started
    window.training_tab.shutdown()

    stalls = [max(0.0, gap - args.probe_ms) for gap in gaps[1:]]
    ordered = sorted(stalls)
    result = {
        "max_stall_ms": round(max(stalls), 1) if stalls else None,
        "p99_stall_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1) if stalls else None,
        "median_gap_ms": round(statistics.median(gaps[1:]), 2) if len(gaps) > 1 else None,
        "stalls_over_50_ms": sum(s > TARGET_MS for s in stalls),
        "probes": len(gaps),
        "steps_plotted": tab.loss_plot.train_point_count,
        "gpu_panel_readings": tab.gpu_panel.reading_count,
        "log_lines": tab.log_panel.view.document().blockCount(),
        "status": done.get("status"),
        "seconds": round(wall, 1),
        "telemetry": type(source).__name__,
        "platform": app.platformName(),
        "target_ms": TARGET_MS,
    }
    if args.trace:
        result["trace"] = trace
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
