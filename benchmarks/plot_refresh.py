"""One refresh of a 100,000-point loss curve: the studio's loss plot against a naive pyqtgraph plot, in one run.

A refresh is what happens on every redraw tick while training: one new point is appended, the widget
redraws its curves (the studio's coalescing timer is not waited for: its redraw is called directly, as
the timer would), and the event loop runs until the plot has repainted and nothing more is pending
(pyqtgraph often paints twice: once for the new data, once more after auto-range has moved the view).
The time of all of that is one sample; the median over --repeats samples is reported. Every plot is
its own 900x300 window, filled with the same --points points of a noisy, decaying loss, and the plots
are refreshed in turn (alternating the order), so all of them see the same machine load.

  * training_tab_loss_plot -- the loss plot of the Training tab (QtMetricsPlots().loss_plot, with its
    frame scheduler, step axis and fixed auto-range padding): raw curve (1 px, translucent) and EMA-
    smoothed curve (2.5 px), antialiased, auto-downsampled (peak / mean) and clipped to the view;
  * qt_loss_plot -- the standalone widget (studio.ui.widgets.qt_loss_plot.QtLossPlot), same curves;
  * naive (the baseline) -- a plain pg.PlotWidget with one curve, pyqtgraph's defaults (1-px pen, no
    antialiasing), given every point again with setData on each refresh: no downsampling, no clip-to-view;
  * naive_same_look -- the naive approach drawing what the studio draws (the same two curves, pens and
    antialiasing, every point); a refresh takes seconds, so it gets its own, smaller --same-look-repeats.

    python benchmarks/plot_refresh.py                    # 100,000 points, 50 refreshes each, offscreen
    python benchmarks/plot_refresh.py --points 1000000 --repeats 20 --json
    QT_QPA_PLATFORM=xcb python benchmarks/plot_refresh.py  # on a desktop, painting to the screen

Target: under 10 ms for one refresh of the 100,000-point curve on a CPU-only machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

TARGET_MS = 10.0
PLOT_SIZE = (900, 300)
OURS, BASELINE = "training_tab_loss_plot", "naive"
SAME_LOOK = "naive_same_look"
DESCRIPTIONS = {
    "training_tab_loss_plot": "Training tab loss plot (downsampled, clipped to view)",
    "qt_loss_plot": "QtLossPlot widget (downsampled, clipped to view)",
    "naive": "naive pg.PlotWidget, 1 curve, 1-px pen, no antialiasing, setData of every point (baseline)",
    "naive_same_look": "naive pg.PlotWidget, the studio's 2 curves and antialiased pens, every point",
}


def loss_series(count: int, seed: int = 0):
    """Steps 1..count and a noisy loss decaying from ~2.6 to ~0.6 (the same for every plot)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    steps = np.arange(1, count + 1, dtype=float)
    scale = max(count, 5) / 5
    losses = 0.6 + 2.0 * np.exp(-steps / scale) + rng.normal(0.0, 0.15, count)
    return steps, losses


def _ema(losses, smoothing: float = 0.6):
    import numpy as np

    out = np.empty_like(losses)
    previous = losses[0]
    for i, loss in enumerate(losses.tolist()):
        previous = smoothing * previous + (1.0 - smoothing) * loss
        out[i] = previous
    return out


class _Subject:
    """One plot window: fill it, refresh it, count its paints."""

    def __init__(self, name: str, app, steps, losses, points: int):
        from PySide6.QtCore import QEvent, QObject

        self.name, self.app = name, app
        self.steps, self.losses, self.filled = steps, losses, points
        self.keep_alive: list = []
        self.top, self.plot_widget, self.curves = self._build()
        self.top.resize(*PLOT_SIZE)
        self.top.show()
        self.paints = 0
        subject = self

        class PaintCounter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 - Qt API
                if event.type() == QEvent.Type.Paint:
                    subject.paints += 1
                return False

        self._counter = PaintCounter()
        self.plot_widget.viewport().installEventFilter(self._counter)
        self._fill()
        self.settle()

    # --- the four kinds ---------------------------------------------------------------------------------
    def _build(self):
        import pyqtgraph as pg

        if self.name == "training_tab_loss_plot":
            from studio.ui.widgets.qt_metrics_plots import QtMetricsPlots

            metrics = QtMetricsPlots()
            self.keep_alive.append(metrics)  # owns the frame scheduler the loss plot redraws through
            plot = metrics.loss_plot
            plot.setParent(None)  # its own 900x300 window, configured exactly as on the Training tab
            self.studio_plot = plot
            return plot, plot.plot_widget, [plot._raw_curve, plot._smooth_curve]
        if self.name == "qt_loss_plot":
            from studio.ui.widgets.qt_loss_plot import QtLossPlot

            plot = QtLossPlot()
            self.studio_plot = plot
            return plot, plot.plot_widget, [plot._raw_curve, plot._smooth_curve]
        if self.name == "naive":
            widget = pg.PlotWidget()
            # pyqtgraph's defaults, stated: the studio turns the global antialias option on.
            curve = widget.plot(pen=pg.mkPen("#1f77b4"), antialias=False)
            return widget, widget, [curve]
        if self.name == "naive_same_look":
            from studio.ui.widgets import _plot_style as style

            widget = pg.PlotWidget(background=style.BACKGROUND)
            raw_colour = pg.mkColor(style.BLUE)
            raw_colour.setAlpha(80)
            raw = widget.plot(pen=pg.mkPen(raw_colour, width=1), antialias=True)
            smooth = widget.plot(pen=pg.mkPen(style.BLUE, width=2.5), antialias=True)
            self.smoothed = _ema(self.losses)
            return widget, widget, [raw, smooth]
        raise ValueError(f"unknown plot {self.name!r}")

    def _fill(self) -> None:
        if hasattr(self, "studio_plot"):
            for step, loss in zip(self.steps[: self.filled].tolist(), self.losses[: self.filled].tolist()):
                self.studio_plot.add_train_point(step, loss)  # point by point, as a run logs them
            self.studio_plot._redraw()
        else:
            self._set_naive(self.filled)

    def _set_naive(self, count: int) -> None:
        x, y = self.steps[:count], self.losses[:count]
        self.curves[0].setData(x, y)
        if len(self.curves) > 1:
            self.curves[1].setData(x, self.smoothed[:count])

    def refresh(self) -> None:
        """The data side of one refresh: one more point, then the redraw the widget does."""
        step, loss = float(self.steps[self.filled]), float(self.losses[self.filled])
        self.filled += 1
        if hasattr(self, "studio_plot"):
            self.studio_plot.add_train_point(step, loss)
            self.studio_plot._redraw()  # what its coalescing redraw timer calls
        else:
            self._set_naive(self.filled)

    def settle(self, max_rounds: int = 20) -> int:
        """Run the event loop until the plot has painted and no further paint follows; returns the paints."""
        start = self.paints
        for _ in range(max_rounds):
            before = self.paints
            self.app.processEvents()
            if self.paints == before and self.paints > start:
                break
        if self.paints == start:  # nothing was scheduled: paint anyway, synchronously
            self.plot_widget.viewport().repaint()
        return self.paints - start

    def painted_points(self) -> int:
        """Points the curves handed to the painter at the last repaint (after downsampling and clipping)."""
        total = 0
        for curve in self.curves:
            x, _ = curve.curve.getData()
            total += 0 if x is None else len(x)
        return total

    def close(self) -> None:
        self.top.close()
        self.top.deleteLater()


def _time_refreshes(subjects: list[_Subject], repeats: int, warmup: int) -> dict[str, dict]:
    samples = {s.name: [] for s in subjects}
    paints = {s.name: [] for s in subjects}
    for index in range(warmup + repeats):
        order = subjects if index % 2 == 0 else subjects[::-1]
        for subject in order:
            started = time.perf_counter()
            subject.refresh()
            count = subject.settle()
            elapsed = (time.perf_counter() - started) * 1000
            if index >= warmup:
                samples[subject.name].append(elapsed)
                paints[subject.name].append(count)
    out = {}
    for subject in subjects:
        times = [round(t, 4) for t in samples[subject.name]]
        out[subject.name] = {
            "description": DESCRIPTIONS[subject.name],
            "median_ms": round(statistics.median(times), 4),
            "min_ms": min(times),
            "max_ms": max(times),
            "refreshes": len(times),
            "runs_ms": times,
            "paints_per_refresh": statistics.median(paints[subject.name]),
            "painted_points": subject.painted_points(),
            "points": subject.filled,
        }
    return out


def measure(*, points: int = 100_000, repeats: int = 50, warmup: int = 3, same_look_repeats: int = 3,
            include_qt_loss_plot: bool = True) -> dict:
    """Fill every plot with `points` points and time `repeats` refreshes of each; medians and ratios."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if points < 2 or repeats < 1:
        raise ValueError("points must be at least 2 and repeats at least 1")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    extra = warmup + max(repeats, same_look_repeats) + 1
    steps, losses = loss_series(points + extra)
    names = [OURS] + (["qt_loss_plot"] if include_qt_loss_plot else []) + [BASELINE]
    subjects = [_Subject(name, app, steps, losses, points) for name in names]
    gc.collect()
    try:
        results = _time_refreshes(subjects, repeats, warmup)
    finally:
        for subject in subjects:
            subject.close()
    if same_look_repeats > 0:
        same_look = _Subject(SAME_LOOK, app, steps, losses, points)
        try:
            results.update(_time_refreshes([same_look], same_look_repeats, 1 if warmup else 0))
        finally:
            same_look.close()
    app.processEvents()
    baseline = results[BASELINE]["median_ms"]
    ratios = {name: round(r["median_ms"] / baseline, 4) for name, r in results.items() if name != BASELINE}
    return {
        "target_ms": TARGET_MS,
        "points": points,
        "repeats": repeats,
        "warmup": warmup,
        "same_look_repeats": same_look_repeats,
        "plot_size": list(PLOT_SIZE),
        "plots": results,
        "ratio": ratios[OURS],  # ours / baseline, medians
        "ratios_vs_baseline": ratios,
        "speedup_vs_same_look": (round(results[SAME_LOOK]["median_ms"] / results[OURS]["median_ms"], 1)
                                 if SAME_LOOK in results else None),
        "meets_target": results[OURS]["median_ms"] < TARGET_MS,
        "platform": app.platformName(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def markdown(result: dict) -> str:
    """A short table for docs/BENCHMARKS.md."""
    lines = [
        f"One refresh of a {result['points']:,}-point loss curve ({result['plot_size'][0]}x{result['plot_size'][1]} "
        f"plot, {result['platform']}, {result['cpus']} CPUs): append one point, redraw, repaint; "
        f"target < {result['target_ms']:g} ms.",
        "",
        "| plot | refresh (median) | min – max | refreshes | paints / refresh | points painted | vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["plots"].items():
        ratio = "1 (baseline)" if name == BASELINE else f"{result['ratios_vs_baseline'][name]:.3g}x"
        lines.append(f"| {r['description']} | {r['median_ms']:.1f} ms | {r['min_ms']:.1f} – {r['max_ms']:.1f} ms | "
                     f"{r['refreshes']} | {r['paints_per_refresh']:g} | {r['painted_points']:,} | {ratio} |")
    ours = result["plots"][OURS]["median_ms"]
    lines += ["", f"Training tab / naive: **{result['ratio']:.2f}x**; target "
              f"{'met' if result['meets_target'] else 'missed'} ({ours:.1f} ms)"
              + (f"; {result['speedup_vs_same_look']:g}x faster than the naive plot drawing the same curves."
                 if result["speedup_vs_same_look"] else ".")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="points in the curve (default 100,000)")
    parser.add_argument("--repeats", type=int, default=50, help="timed refreshes of each plot (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed refreshes of each plot first (default 3)")
    parser.add_argument("--same-look-repeats", type=int, default=3,
                        help="timed refreshes of the naive plot drawing the studio's curves (seconds each; "
                             "default 3, 0 skips it)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    result = measure(points=args.points, repeats=args.repeats, warmup=args.warmup,
                     same_look_repeats=args.same_look_repeats)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
