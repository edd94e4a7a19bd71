"""The live curves of the methods beyond SFT, from the `metrics` of each step event (TRL's own log keys).

DPO, ORPO and KTO log the reward margin (how much higher the chosen reply is rewarded than the rejected one),
the reward accuracy (the share of pairs where it is) and the log-probabilities of both replies; GRPO logs the
mean of each reward function, the total reward and its spread within a group, the length of the replies and,
with a KL coefficient, the KL from the base. A plot appears with the first step that carries one of its keys,
so an SFT run shows none of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QWidget

from studio.ui.widgets import _plot_style as style

__all__ = ["METHOD_PLOTS", "MethodPlot", "QtMethodPlots"]

_COLOURS = (style.BLUE, style.ORANGE, style.GREEN, style.RED, style.GREY, "#8e44ad", "#17becf")


@dataclass(frozen=True)
class MethodPlot:
    """One plot: its title and the metric keys it draws (a key ending in '/' takes every key under it)."""

    title: str
    keys: tuple[str, ...]
    labels: tuple[str, ...] = ()

    def matches(self, key: str) -> bool:
        return any(key.startswith(k) if k.endswith("/") else key == k for k in self.keys)

    def label(self, key: str) -> str:
        for k, text in zip(self.keys, self.labels):
            if key == k:
                return text
        if key.startswith("rewards/") and key.endswith("/mean"):
            return key[len("rewards/"):-len("/mean")]  # GRPO's rewards/<function>/mean
        return key


METHOD_PLOTS = (
    MethodPlot("Reward margin", ("rewards/margins",), ("chosen − rejected",)),
    MethodPlot("Reward accuracy", ("rewards/accuracies",), ("chosen preferred",)),
    MethodPlot("Log-probabilities", ("logps/chosen", "logps/rejected"), ("chosen", "rejected")),
    MethodPlot("Reward per function", ("rewards/",)),
    MethodPlot("Reward", ("reward", "reward_std"), ("mean", "spread (std)")),
    MethodPlot("Reply length", ("completions/mean_length",), ("mean tokens",)),
    MethodPlot("KL from the base", ("kl",), ("KL",)),
)
"""The plots in order; a GRPO reward key (rewards/<fn>/mean) is drawn by the per-function plot only."""


def _plot_of(key: str) -> MethodPlot | None:
    if key.startswith("rewards/") and not key.endswith("/mean"):
        return next((p for p in METHOD_PLOTS if key in p.keys), None)  # DPO's rewards/margins etc., not GRPO's std
    for plot in METHOD_PLOTS:
        if plot.matches(key) and (plot.keys != ("rewards/",) or key.endswith("/mean")):
            return plot
    return None


class _QtGroupPlot(QWidget):
    """One method plot: a curve per metric key, created when the key first appears."""

    def __init__(self, spec: MethodPlot, parent=None):
        super().__init__(parent)
        self.spec = spec
        self.plot_widget = style.make_plot_widget(spec.title, "step", None)
        self.plot_widget.setMinimumHeight(150)
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

    def __init__(self, parent=None):
        super().__init__(parent)
        self._steps: dict[int, dict[str, float]] = {}
        self.plots: dict[str, _QtGroupPlot] = {}
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self.setVisible(False)

    def set_steps(self, steps: Sequence[int], metrics: Sequence[dict | None]) -> None:
        """Every logged step's metrics (a run's whole history, or after a resume dropped steps)."""
        for plot in self.plots.values():
            plot.setParent(None)
            plot.deleteLater()
        self.plots = {}
        self._steps = {}
        for step, values in zip(steps, metrics):
            self._steps[int(step)] = {k: float(v) for k, v in (values or {}).items()
                                      if isinstance(v, (int, float)) and math.isfinite(v)}
        self._redraw()

    def add_step(self, step: int, metrics: dict | None) -> None:
        values = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if not values and not self._steps:
            return
        self._steps[int(step)] = values
        self._redraw()

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric key, as plotted."""
        xs = sorted(s for s, values in self._steps.items() if key in values)
        return [float(x) for x in xs], [self._steps[x][key] for x in xs]

    def _redraw(self) -> None:
        keys = sorted({k for values in self._steps.values() for k in values})
        for spec in METHOD_PLOTS:
            mine = [k for k in keys if _plot_of(k) is spec]
            if not mine:
                continue
            if spec.title not in self.plots:
                self.plots[spec.title] = _QtGroupPlot(spec)
                order = [s.title for s in METHOD_PLOTS if s.title in self.plots]
                self._layout.insertWidget(order.index(spec.title), self.plots[spec.title])
            for key in mine:
                self.plots[spec.title].set_points(key, *self.series(key))
        self.setVisible(bool(self.plots))
