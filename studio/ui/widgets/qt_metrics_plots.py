"""The Training tab's live curves: loss (raw, smoothed, eval), held-out score, learning rate, grad norm, tokens/s.

A view of the Training session's series (`studio.core.sessions.training.TrainingSeries`, which folds the run's
events): told of each change, the plots take the new point from the series, appended to growing numpy buffers
and redrawn by a frame timer that repaints one plot per tick. When a resumed run drops steps it trains again, or
the x axis switches between steps and training time, the plots are reloaded from the series in one go. A method
beyond SFT adds its own curves (qt_method_plots), in a row of their own shown once a step carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QRadioButton, QVBoxLayout, QWidget
from superqt import QLabeledDoubleSlider
from superqt.utils import qthrottled, signals_blocked

from studio.core.sessions.training import TrainingSeries
from studio.core.system.units import format_duration
from studio.ui.widgets import _plot_style as style
from studio.ui.widgets._growing_buffer import GrowingBuffer
from studio.ui.widgets.qt_loss_plot import QtLossPlot
from studio.ui.widgets.qt_method_plots import QtMethodPlots

if TYPE_CHECKING:
    from studio.core.train.scores import ScorePoint

__all__ = ["QtMetricsPlots", "QtScoresPlot", "QtSeriesPlot", "TrainingXAxis"]

# One plot is redrawn per frame tick: a repaint costs a few milliseconds per plot (more on a busy CPU),
# and four plots repainted in one pass of the event loop would add up to a stall the user feels.
_FRAME_INTERVAL_MS = 40
_LEFT_AXIS_WIDTH = 52  # room for "0.00025" or "12000"
X_STEPS, X_TIME = "steps", "time"


class TrainingXAxis(pg.AxisItem):
    """A bottom axis that reads as steps (plain integers) or as training time (m:ss)."""

    def __init__(self, mode: str = X_STEPS):
        super().__init__(orientation="bottom")
        self.mode = mode
        self.setPen(pg.mkPen(style.FOREGROUND))
        self.setTextPen(pg.mkPen(style.FOREGROUND))
        self.enableAutoSIPrefix(False)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.setLabel("training time (m:ss)" if mode == X_TIME else "step", color=style.FOREGROUND)
        self.picture = None  # pyqtgraph caches the painted ticks
        self.update()

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph API
        if self.mode != X_TIME:
            levels = super().tickValues(minVal, maxVal, size)
            whole = [(spacing, values) for spacing, values in levels if spacing >= 1]  # no tick at step 2.5
            if whole:
                return whole
            # A span of a few steps: pyqtgraph would tick every half step; every whole step reads right.
            return [(1.0, [float(v) for v in range(math.ceil(minVal), math.floor(maxVal) + 1)])]
        span = max(maxVal - minVal, 1e-9)
        # Round-number time steps (seconds, minutes, hours) instead of decimal ones.
        for spacing in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400):
            if span / spacing <= max(2, size / 90):
                break
        first = math.ceil(minVal / spacing) * spacing
        return [(spacing, list(np.arange(first, maxVal + spacing * 0.01, spacing)))]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph API
        if self.mode == X_TIME:
            return [format_duration(v) for v in values]
        return [f"{v:.0f}" if float(v).is_integer() else f"{v:g}" for v in values]


def _install_x_axis(plot_widget: pg.PlotWidget, mode: str) -> TrainingXAxis:
    axis = TrainingXAxis(mode)
    plot_item = plot_widget.getPlotItem()
    plot_item.setAxisItems({"bottom": axis})
    axis.set_mode(mode)
    plot_item.showGrid(x=True, y=True, alpha=style.GRID_ALPHA)
    style.make_axes_cheap(plot_item, left_axis_width=_LEFT_AXIS_WIDTH)
    return axis


class _FrameScheduler(QObject):
    """Runs pending redraws one per tick, oldest first, so at most one plot repaints per event-loop pass."""

    def __init__(self, parent: QObject, interval_ms: int = _FRAME_INTERVAL_MS):
        super().__init__(parent)
        self._pending: list[Callable[[], None]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def request(self, redraw: Callable[[], None]) -> None:
        if redraw not in self._pending:
            self._pending.append(redraw)
        if not self._timer.isActive():
            self._timer.start()

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def cancel(self, redraw: Callable[[], None]) -> None:
        if redraw in self._pending:
            self._pending.remove(redraw)

    def _tick(self) -> None:
        if self._pending:
            self._pending.pop(0)()
        if not self._pending:
            self._timer.stop()


class _QtScheduledLossPlot(QtLossPlot):
    """The loss plot, redrawn in its turn by a _FrameScheduler instead of by its own timer."""

    def __init__(self, scheduler: _FrameScheduler, **kwargs):
        self._scheduler = scheduler
        super().__init__(**kwargs)

    def _schedule_redraw(self) -> None:  # QtLossPlot's hook for "data changed"
        self._scheduler.request(self._redraw)

    def _redraw(self) -> None:
        self._scheduler.cancel(self._redraw)
        super()._redraw()


class QtSeriesPlot(QWidget):
    """One live metric against the step (or time): a curve created once and fed with setData."""

    def __init__(self, title: str, colour: str, parent: QWidget | None = None, *, y_label: str | None = None,
                 scheduler: _FrameScheduler | None = None):
        super().__init__(parent)
        self._scheduler = scheduler
        self._data = GrowingBuffer(2, capacity=256)
        self._plot_widget = style.make_plot_widget(title, None, y_label)
        self._plot_widget.setMinimumHeight(100)
        self.x_axis = _install_x_axis(self._plot_widget, X_STEPS)
        # A 1-pixel pen: Qt strokes it on a fast path, while a wider antialiased pen along a noisy
        # (peak-downsampled) series costs ten times as much per repaint.
        self._curve = self._plot_widget.getPlotItem().plot(pen=pg.mkPen(colour, width=1))
        style.enable_fast_downsampling(self._curve, "peak")
        self._redraw_soon = style.host_plot(self, self._plot_widget, self._redraw)

    @property
    def plot_widget(self) -> pg.PlotWidget:
        return self._plot_widget

    @property
    def curve(self) -> pg.PlotDataItem:
        return self._curve

    @property
    def point_count(self) -> int:
        return len(self._data)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(x, y)``, current even before a redraw."""
        return self._data.column(0).copy(), self._data.column(1).copy()

    def add_point(self, x: float, y: float) -> None:
        """Append one point; a missing value (None or NaN, e.g. tokens/s at a process's first step) is none."""
        if y is None or not math.isfinite(y):
            # Not even as a gap: with clip-to-view, a NaN at the edge of the view makes auto-range
            # oscillate between two ranges (a repaint every frame).
            return
        self._data.append(x, y)
        if self._scheduler is not None:
            self._scheduler.request(self._redraw)
        else:
            self._redraw_soon()

    def set_points(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        finite = np.isfinite(ys)
        self._data.replace([xs[finite], ys[finite]])
        self._redraw()
        self._plot_widget.getPlotItem().enableAutoRange()

    def clear(self) -> None:
        self.set_points([], [])

    def _redraw(self) -> None:
        self._redraw_soon.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel(self._redraw)
        self._curve.setData(self._data.column(0), self._data.column(1))
        style.mark_lone_point(self._curve, len(self._data))


class QtScoresPlot(QWidget):
    """Scores while training: the share of the held-out examples passed at each scoring, on a fixed 0..1 axis,
    each point labelled with its count ("3/8") and hovered for the step, the metric and the mean score."""

    def __init__(self, parent: QWidget | None = None, *, scheduler: _FrameScheduler | None = None):
        super().__init__(parent)
        self._scheduler = scheduler
        self._points: list[ScorePoint] = []
        self._xs: list[float] = []
        self._plot_widget = style.make_plot_widget("Held-out score", None, "passed")
        self._plot_widget.setMinimumHeight(100)
        self.x_axis = _install_x_axis(self._plot_widget, X_STEPS)
        plot = self._plot_widget.getPlotItem()
        # A fixed axis: 3/8 sits at the same height in every run, and a flat curve does not zoom into noise.
        plot.setYRange(0.0, 1.0, padding=0.05)
        plot.enableAutoRange(axis="y", enable=False)
        plot.setMouseEnabled(y=False)
        self._curve = plot.plot(pen=pg.mkPen(style.GREEN, width=1.5))
        self._spots = pg.ScatterPlotItem(size=8, pen=pg.mkPen("w", width=1), brush=pg.mkBrush(style.GREEN),
                                         hoverable=True, tip=lambda x, y, data: data)
        plot.addItem(self._spots)
        self._labels: list[pg.TextItem] = []
        self.caption = QLabel("")  # the latest scoring in words, for a glance without hovering
        self.caption.setStyleSheet(f"color: {style.MUTED};")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self._plot_widget)
        layout.addWidget(self.caption)
        self._redraw_soon = style.redraw_soon(self._redraw)

    @property
    def plot_widget(self) -> pg.PlotWidget:
        return self._plot_widget

    @property
    def point_count(self) -> int:
        return len(self._points)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(x, share passed)``, current even before a redraw."""
        return np.asarray(self._xs, dtype=float), np.asarray([p.share for p in self._points], dtype=float)

    def labels(self) -> list[str]:
        """Each point's count label, "3/8"."""
        return [p.label for p in self._points]

    def tooltips(self) -> list[str]:
        return [p.describe() for p in self._points]

    def add_point(self, x: float, point: ScorePoint) -> None:
        self._points.append(point)
        self._xs.append(float(x))
        if self._scheduler is not None:
            self._scheduler.request(self._redraw)
        else:
            self._redraw_soon()

    def set_points(self, xs: Sequence[float], points: Sequence[ScorePoint]) -> None:
        self._xs, self._points = [float(x) for x in xs], list(points)
        self._redraw()
        self._plot_widget.getPlotItem().enableAutoRange(axis="x")

    def _redraw(self) -> None:
        self._redraw_soon.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel(self._redraw)
        xs, ys = self.points()
        self._curve.setData(xs, ys)
        self._spots.setData(x=xs, y=ys, data=self.tooltips())
        plot = self._plot_widget.getPlotItem()
        for item in self._labels[len(self._points):]:
            plot.removeItem(item)
        del self._labels[len(self._points):]
        for index, (x, point) in enumerate(zip(self._xs, self._points)):
            if index == len(self._labels):
                item = pg.TextItem(color=style.FOREGROUND, anchor=(0.5, 1.2))
                plot.addItem(item)
                self._labels.append(item)
            self._labels[index].setText(point.label)
            self._labels[index].setPos(x, point.share)
        self.caption.setText(f"Latest: {self._points[-1].describe()}" if self._points else "")
        self.setVisible(bool(self._points))


class QtMetricsPlots(QWidget):
    """Every live training curve, with a smoothing slider and a steps / training-time toggle."""

    def __init__(self, series: TrainingSeries | None = None, parent: QWidget | None = None, *,
                 smoothing: float = 0.6):
        super().__init__(parent)
        self.series = series if series is not None else TrainingSeries()
        self.x_mode = X_STEPS

        self._scheduler = _FrameScheduler(self)
        self.loss_plot = _QtScheduledLossPlot(self._scheduler, smoothing=smoothing)
        self.loss_plot.setMinimumHeight(150)
        self._loss_axis = _install_x_axis(self.loss_plot.plot_widget, X_STEPS)
        legend = self.loss_plot.plot_widget.getPlotItem().legend
        if legend is not None:
            # Bottom left: a falling loss curve leaves that corner empty, the top right is where eval points go.
            legend.anchor(itemPos=(0, 1), parentPos=(0, 1), offset=(8, -8))
        self.lr_plot = QtSeriesPlot("Learning rate", style.GREEN, scheduler=self._scheduler)
        self.grad_norm_plot = QtSeriesPlot("Gradient norm", style.RED, scheduler=self._scheduler)
        self.tokens_plot = QtSeriesPlot("Tokens / s", style.GREY, scheduler=self._scheduler)
        self.series_plots = {"learning_rate": self.lr_plot, "grad_norm": self.grad_norm_plot,
                             "tokens_per_second": self.tokens_plot}
        self.scores_plot = QtScoresPlot(scheduler=self._scheduler)
        self.scores_plot.setVisible(False)  # shown with a run's first scoring (training.score_examples)
        self.method_plots = QtMethodPlots(self.series)

        self.steps_button = QRadioButton("Steps")
        self.time_button = QRadioButton("Training time")
        self.steps_button.setChecked(True)
        self.steps_button.setToolTip("Plot against the optimiser step")
        self.time_button.setToolTip("Plot against training time (a stopped run's pause is left out)")
        self._x_group = QButtonGroup(self)
        for button in (self.steps_button, self.time_button):
            self._x_group.addButton(button)
        self.time_button.toggled.connect(lambda on: self.set_x_mode(X_TIME if on else X_STEPS))

        self.smoothing_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0.0, 0.99)
        self.smoothing_slider.setSingleStep(0.01)
        self.smoothing_slider.setDecimals(2)
        self.smoothing_slider.setValue(smoothing)
        self.smoothing_slider.setMaximumWidth(220)
        self.smoothing_slider.setToolTip("Weight of the previous smoothed value (exponential moving average); "
                                         "0 = the raw loss")
        # A dragged slider recomputes the smoothed curve at most ~16 times a second.
        self._apply_smoothing_soon = qthrottled(self._apply_smoothing, timeout=60, leading=False)
        self.smoothing_slider.valueChanged.connect(lambda _: self._apply_smoothing_soon())

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("x axis:"))
        controls.addWidget(self.steps_button)
        controls.addWidget(self.time_button)
        controls.addSpacing(24)
        controls.addWidget(QLabel("Loss smoothing:"))
        controls.addWidget(self.smoothing_slider)
        controls.addStretch(1)

        small = QHBoxLayout()
        small.setContentsMargins(0, 0, 0, 0)
        small.setSpacing(4)
        for plot in self.series_plots.values():
            small.addWidget(plot)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(controls)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(4)
        top.addWidget(self.loss_plot, stretch=3)
        top.addWidget(self.scores_plot, stretch=2)  # the accuracy beside the eval loss it is read with
        layout.addLayout(top, stretch=3)
        layout.addLayout(small, stretch=2)
        layout.addWidget(self.method_plots, stretch=2)
        self.series.subscribe(self._on_change)

    # --- drawing the series ----------------------------------------------------------------------------
    def _on_change(self, change: str) -> None:
        """The series changed: draw its new point, or everything again after a reset."""
        by_time = self.x_mode == X_TIME
        m = self.series.metrics
        if change == "step":
            x = m.times[-1] if by_time else m.steps[-1]
            self.loss_plot.add_train_point(x, m.series["loss"][-1])
            for name, plot in self.series_plots.items():
                plot.add_point(x, m.series[name][-1])
            if self.series.method_steps:
                self.method_plots.refresh()
        elif change == "eval":
            self.loss_plot.add_eval_point(self.series.eval_xs(by_time)[-1], m.eval_loss[-1])
        elif change == "score":
            self.scores_plot.add_point(self.series.score_xs(by_time)[-1], self.series.score_points[-1])
        elif change == "reset":
            self.reload()

    @property
    def metrics(self):
        """The series' RunMetrics (steps, losses, timing)."""
        return self.series.metrics

    def reload(self) -> None:
        """Redraw every curve from the series (after a truncation, a new run or an x-axis change)."""
        by_time = self.x_mode == X_TIME
        m, xs = self.series.metrics, self.series.xs(by_time)
        self.loss_plot.set_points(np.asarray(xs, dtype=float), np.asarray(m.series["loss"], dtype=float))
        self.loss_plot.set_eval_points(self.series.eval_xs(by_time), m.eval_loss)
        self.loss_plot.plot_widget.getPlotItem().enableAutoRange()
        for name, plot in self.series_plots.items():
            plot.set_points(xs, m.series[name])
        self.method_plots.clear()
        self.scores_plot.set_points(self.series.score_xs(by_time), self.series.score_points)

    # --- controls ----------------------------------------------------------------------------------------
    def set_x_mode(self, mode: str) -> None:
        """Plot against "steps" or "time" (training seconds)."""
        if mode not in (X_STEPS, X_TIME):
            raise ValueError(f"x mode must be {X_STEPS!r} or {X_TIME!r}, got {mode!r}")
        if mode == self.x_mode:
            return
        self.x_mode = mode
        with signals_blocked(self.time_button):
            self.time_button.setChecked(mode == X_TIME)
            self.steps_button.setChecked(mode == X_STEPS)
        for axis in [self._loss_axis, self.scores_plot.x_axis] + [plot.x_axis for plot in self.series_plots.values()]:
            axis.set_mode(mode)
        self.reload()

    def set_smoothing(self, value: float) -> None:
        self.smoothing_slider.setValue(value)
        self._apply_smoothing()

    def _apply_smoothing(self) -> None:
        self._apply_smoothing_soon.cancel()
        value = round(float(self.smoothing_slider.value()), 2)
        if value != self.loss_plot.smoothing:
            self.loss_plot.smoothing = value

    # --- reading (tests and screenshots) ------------------------------------------------------------------
    @property
    def redraw_pending(self) -> bool:
        """Whether some plot still has points to draw (the frame timer draws one plot per tick)."""
        return self._scheduler.pending

    @property
    def step_point_count(self) -> int:
        return self.loss_plot.train_point_count

    def series_points(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.series_plots[name].points()
