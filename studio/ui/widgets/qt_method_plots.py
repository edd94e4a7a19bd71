"""The live curves of the methods beyond SFT: a view of the Training session's method series.

Which metric keys a method plots, and under which title, is the session's knowledge
(the methods wing's live plots, through `studio.core.sessions.training.METHOD_PLOTS`); this widget draws the groups the series has points for. A plot
appears with the first step that carries one of its keys, so an SFT run shows none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QWidget

from studio.ui.widgets import _plot_style as style

if TYPE_CHECKING:
    from studio.core.sessions.training import MethodPlot, TrainingSeries

__all__ = ["QtMethodPlots"]

_COLOURS = (style.BLUE, style.ORANGE, style.GREEN, style.RED, style.GREY, "#8e44ad", "#17becf")


class _QtGroupPlot(QWidget):
    """One method plot: a curve per metric key, created when the key first appears."""

    def __init__(self, spec: MethodPlot, parent=None):
        super().__init__(parent)
        self.spec = spec
        self.plot_widget = style.make_plot_widget(spec.title, "step", None)
        self.plot_widget.setMinimumHeight(100)
        style.make_axes_cheap(self.plot_widget.getPlotItem())
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.points: dict[str, tuple[list[float], list[float]]] = {}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)

    def set_points(self, key: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        if key not in self.curves:
            colour = _COLOURS[len(self.curves) % len(_COLOURS)]
            self.curves[key] = self.plot_widget.getPlotItem().plot(pen=pg.mkPen(colour, width=2))
            # The curves' names under the title in their colours: a legend would sit on the curves of a plot this
            # small, whichever corner it took.
            names = " · ".join(f"<span style='color:{curve.opts['pen'].color().name()}'>{self.spec.label(k)}</span>"
                               for k, curve in self.curves.items())
            self.plot_widget.getPlotItem().setTitle(
                f"{self.spec.title}<br><span style='font-size:9pt'>{names}</span>", color=style.FOREGROUND,
                size="11pt")
        self.points[key] = (list(xs), list(ys))
        self.curves[key].setData(list(xs), list(ys))
        style.mark_lone_point(self.curves[key], len(xs))


class QtMethodPlots(QWidget):
    """The method's curves beside each other; hidden while no step has carried a method metric."""

    def __init__(self, series: "TrainingSeries", parent=None):
        super().__init__(parent)
        self._series = series
        self.plots: dict[str, _QtGroupPlot] = {}
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self.setVisible(False)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric key, as plotted."""
        return self._series.method_series(key)

    def clear(self) -> None:
        for plot in self.plots.values():
            plot.setParent(None)
            plot.deleteLater()
        self.plots = {}
        self.refresh()

    def refresh(self) -> None:
        """Draw the series' method plots (a plot is made the first time its group has points)."""
        groups = self._series.method_plots()
        order = [spec.title for spec, _ in groups]
        for spec, keys in groups:
            if spec.title not in self.plots:
                self.plots[spec.title] = _QtGroupPlot(spec)
                self._layout.insertWidget(order.index(spec.title), self.plots[spec.title])
            for key in keys:
                self.plots[spec.title].set_points(key, *self.series(key))
        self.setVisible(bool(self.plots))
