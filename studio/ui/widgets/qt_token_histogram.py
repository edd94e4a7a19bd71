"""Token-length histogram with the max-length cutoff and what it cuts, the measurement's status and the offer to
measure every row."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from studio.core.data.stats import TokenStats
from studio.ui.widgets import _plot_style as style

__all__ = ["QtTokenHistogram"]


class QtTokenHistogram(QWidget):
    """Bars of rows per token length; a red line at max_length; a caption with the counts; under it the
    measurement's status and a "Measure all" button (signals `measure_all_requested()`)."""

    measure_all_requested = Signal()

    def __init__(self, parent=None, *, bins: int = 40):
        super().__init__(parent)
        self._bins = bins
        self.stats: TokenStats | None = None
        self.max_length = 1024
        self.plot_widget = style.make_plot_widget("Token length per row", "tokens", "rows")
        self.plot_widget.setMinimumHeight(150)
        plot = self.plot_widget.getPlotItem()
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        self._bars = pg.BarGraphItem(x0=[0], x1=[1], height=[0], brush=pg.mkBrush(style.BLUE), pen=pg.mkPen("w"))
        plot.addItem(self._bars)
        self._over_bars = pg.BarGraphItem(x0=[0], x1=[1], height=[0], brush=pg.mkBrush(style.RED),
                                          pen=pg.mkPen("w"))
        plot.addItem(self._over_bars)
        self.cutoff = pg.InfiniteLine(pos=self.max_length, angle=90, movable=False,
                                      pen=pg.mkPen(style.RED, width=2, style=Qt.PenStyle.DashLine),
                                      label="max_length {value:.0f}",
                                      labelOpts={"position": 0.88, "color": style.RED, "anchors": [(1, 0), (1, 0)]})
        plot.addItem(self.cutoff)
        self.empty_text = pg.TextItem("No rows measured yet", color=style.MUTED, anchor=(0.5, 0.5))
        plot.addItem(self.empty_text, ignoreBounds=True)
        self.caption = QLabel("Token lengths appear once a model is chosen and the data is read.")
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget, stretch=1)
        layout.addWidget(self.caption)
        self.status_label = QLabel()
        self.measure_all_button = QPushButton("Measure all rows")
        self.measure_all_button.clicked.connect(self.measure_all_requested)
        self.measure_all_button.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, stretch=1)
        status_row.addWidget(self.measure_all_button)
        layout.addLayout(status_row)
        self._show_empty()

    def clear(self, message: str = "") -> None:
        """No bars, axes that stay at 0 rows (not autoranged around nothing) and `message` as the caption."""
        self.stats = None
        self._bars.setOpts(x0=[0], x1=[1], height=[0])
        self._over_bars.setOpts(x0=[0], x1=[1], height=[0])
        self.caption.setText(message)
        self._show_empty()

    def _show_empty(self) -> None:
        plot = self.plot_widget.getPlotItem()
        right = self.max_length * 1.1
        plot.setXRange(0, right, padding=0.02)
        plot.setYRange(0, 1, padding=0)
        plot.getAxis("left").setStyle(showValues=False)  # "0.2 rows" would mean nothing
        self.empty_text.setPos(right / 2, 0.5)
        self.empty_text.show()

    def show_measurement(self, stats: TokenStats | None, message: str, *, max_length: int, status: str = "",
                         measure_all: str = "") -> None:
        """The statistics measured so far (None: `message` says why there are none), cut at `max_length`, the
        status line and the "Measure all" button's text ("" hides it); redraws only what changed."""
        if max_length != self.max_length:
            self.set_max_length(max_length)
        if stats is not None and stats is not self.stats:
            self.set_stats(stats)
        elif stats is None and (self.stats is not None or self.caption.text() != message):
            self.clear(message)
        self.status_label.setText(status)
        self.measure_all_button.setText(measure_all)
        self.measure_all_button.setVisible(bool(measure_all))

    def set_max_length(self, max_length: int) -> None:
        self.max_length = max_length
        self.cutoff.setValue(max_length)
        if self.stats is not None:
            self.set_stats(self.stats)
        else:
            self._show_empty()

    def truncated_rows(self) -> int:
        """Rows (among those measured) longer than the current max_length."""
        return 0 if self.stats is None else int((self.stats.lengths > self.max_length).sum())

    def untrained_rows(self) -> int:
        return 0 if self.stats is None else self.stats.untrained_rows_at(self.max_length)

    def set_stats(self, stats: TokenStats) -> None:
        self.stats = stats
        stats = stats.with_max_length(self.max_length)
        edges, counts = stats.histogram(self._bins)
        edges = np.asarray(edges, dtype=float)
        counts = np.asarray(counts, dtype=float)
        over = edges[:-1] >= self.max_length
        self._bars.setOpts(x0=edges[:-1][~over], x1=edges[1:][~over], height=counts[~over])
        self._over_bars.setOpts(x0=edges[:-1][over], x1=edges[1:][over], height=counts[over])
        plot = self.plot_widget.getPlotItem()
        plot.setXRange(0, float(edges[-1]), padding=0.02)
        plot.setYRange(0, max(1.0, float(counts.max()) * 1.1), padding=0)
        plot.getAxis("left").setStyle(showValues=True)
        self.empty_text.setVisible(not stats.measured)
        self.caption.setText(self._caption(stats))

    def _caption(self, stats: TokenStats) -> str:
        if not stats.measured:
            return "No rows measured yet."
        summary = stats.summary()
        truncated, untrained = stats.truncated_rows, stats.untrained_rows
        approx = "" if stats.complete else "≈ "
        scope = (f"all {stats.total_rows:,} rows" if stats.complete
                 else f"a random sample of {stats.measured:,} of {stats.total_rows:,} rows")
        parts = [f"Measured {scope}: median <b>{summary['median']}</b> tokens, p95 {summary['p95']}, "
                 f"max {summary['max']}."]
        share = truncated / stats.measured
        colour = style.RED if truncated else style.FOREGROUND
        parts.append(f"<span style='color:{colour}'><b>{approx}{stats.estimate(truncated):,}</b> row(s) "
                     f"({share:.1%}) longer than max_length {self.max_length} will be truncated.</span>")
        if untrained:
            lines = ", ".join(map(str, stats.untrained_lines[:8]))
            parts.append(f"<span style='color:{style.RED}'><b>{approx}{stats.estimate(untrained):,}</b> row(s) have "
                         f"no trained token within max_length and teach nothing (e.g. line {lines}).</span>")
        return " ".join(parts)
