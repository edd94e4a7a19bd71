"""Live training / evaluation loss plot."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from studio.ui.widgets import _plot_style as style
from studio.ui.widgets._growing_buffer import GrowingBuffer

__all__ = ["QtLossPlot"]

_STEP, _LOSS, _SMOOTH = 0, 1, 2


class QtLossPlot(QWidget):
    """Train loss (raw and EMA-smoothed) and eval loss against the step.

    Appends are cheap and never repaint directly: the data is available at
    once through :meth:`train_points`, while the curves are refreshed by a
    coalescing timer at most ~10 times per second.
    """

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        smoothing: float = 0.6,
        title: str = "Training loss",
    ) -> None:
        super().__init__(parent)
        self._smoothing = self._check_smoothing(smoothing)
        self._train = GrowingBuffer(3)
        self._eval = GrowingBuffer(2, capacity=64)

        self._plot_widget = style.make_plot_widget(title, "step", "loss")
        plot = self._plot_widget.getPlotItem()
        style.make_axes_cheap(plot)
        style.add_legend(plot)
        # Created once and fed with setData: re-creating items per update
        # leaks scene items and is the usual cause of sluggish live plots.
        raw_colour = pg.mkColor(style.BLUE)
        raw_colour.setAlpha(80)  # context for the smoothed line, not competition
        self._raw_curve = plot.plot(name="train (raw)", pen=pg.mkPen(raw_colour, width=1))
        self._smooth_curve = plot.plot(name="train (smoothed)", pen=pg.mkPen(style.BLUE, width=2.5))
        self._eval_curve = plot.plot(
            name="eval",
            pen=pg.mkPen(style.ORANGE, width=1.5),
            symbol="o",
            symbolSize=7,
            symbolPen=pg.mkPen("w", width=1),
            symbolBrush=pg.mkBrush(style.ORANGE),
        )
        # "peak" keeps spikes of the raw curve visible. The smoothed curve has
        # none, and stroking a thick antialiased pen along a peak zigzag is
        # what makes Qt's raster painter slow, so it is averaged instead.
        style.enable_fast_downsampling(self._raw_curve, "peak")
        style.enable_fast_downsampling(self._smooth_curve, "mean")

        self._redraw_soon = style.host_plot(self, self._plot_widget, self._redraw)

    # ------------------------------------------------------------------ API

    @property
    def plot_widget(self) -> pg.PlotWidget:
        """The wrapped pyqtgraph widget, for embedding tweaks and export."""
        return self._plot_widget

    @property
    def smoothing(self) -> float:
        """EMA weight of the previous smoothed value, in ``[0, 1)``; 0 = raw."""
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self._smoothing = self._check_smoothing(value)
        losses = self._train.column(_LOSS).copy()
        steps = self._train.column(_STEP).copy()
        self._train.replace([steps, losses, self._ema(losses)])
        self._schedule_redraw()

    @property
    def train_point_count(self) -> int:
        """Number of train-loss points received so far."""
        return len(self._train)

    @property
    def eval_point_count(self) -> int:
        """Number of eval-loss points received so far."""
        return len(self._eval)

    def train_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the raw train ``(steps, losses)``, current even before a redraw."""
        return self._train.column(_STEP).copy(), self._train.column(_LOSS).copy()

    def smoothed_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the smoothed train ``(steps, losses)``."""
        return self._train.column(_STEP).copy(), self._train.column(_SMOOTH).copy()

    def eval_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the eval ``(steps, losses)``."""
        return self._eval.column(0).copy(), self._eval.column(1).copy()

    def add_train_point(self, step: int, loss: float) -> None:
        """Append one train-loss value; the curve catches up within ~100 ms."""
        loss = float(loss)
        previous = self._train.last(_SMOOTH)
        self._train.append(step, loss, self._ema_step(previous, loss))
        self._schedule_redraw()

    def add_eval_point(self, step: int, loss: float) -> None:
        """Append one eval-loss value."""
        self._eval.append(step, float(loss))
        self._schedule_redraw()

    def set_points(
        self, steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray
    ) -> None:
        """Replace all train points at once (e.g. when reopening a finished run)."""
        steps_a = np.asarray(steps, dtype=float)
        losses_a = np.asarray(losses, dtype=float)
        if steps_a.shape != losses_a.shape:
            raise ValueError("steps and losses must have the same length")
        self._train.replace([steps_a, losses_a, self._ema(losses_a)])
        self._redraw()

    def set_eval_points(
        self, steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray
    ) -> None:
        """Replace all eval points at once."""
        self._eval.replace([steps, losses])
        self._redraw()

    def clear(self) -> None:
        """Drop every point, e.g. before a new run."""
        self._train.clear()
        self._eval.clear()
        self._redraw()
        self._plot_widget.getPlotItem().enableAutoRange()

    # ------------------------------------------------------------ internals

    @staticmethod
    def _check_smoothing(value: float) -> float:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {value}")
        return value

    def _ema_step(self, previous: float | None, loss: float) -> float:
        # A NaN/inf loss (fp16 overflow, empty batch) would poison every later
        # smoothed value, so the smoothed curve holds its last value instead.
        if not math.isfinite(loss):
            return math.nan if previous is None else previous
        if previous is None or not math.isfinite(previous):
            return loss
        return self._smoothing * previous + (1.0 - self._smoothing) * loss

    def _ema(self, losses: np.ndarray) -> np.ndarray:
        out = np.empty_like(losses)
        previous: float | None = None
        for i, loss in enumerate(losses.tolist()):
            previous = self._ema_step(previous, loss)
            out[i] = previous
        return out

    def _schedule_redraw(self) -> None:
        self._redraw_soon()

    def _redraw(self) -> None:
        self._redraw_soon.cancel()
        steps = self._train.column(_STEP)
        self._raw_curve.setData(steps, self._train.column(_LOSS), connect="finite")
        self._smooth_curve.setData(steps, self._train.column(_SMOOTH), connect="finite")
        style.mark_lone_point(self._smooth_curve, len(steps))
        self._eval_curve.setData(self._eval.column(0), self._eval.column(1))
