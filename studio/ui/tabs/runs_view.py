"""Runs view: the run history as a table, with the loss curves of the selected runs overlaid.

After the fixed columns come the runs' latest eval scores, one column per metric any run was scored on
("Tool call": 41/47), sorted by the fraction passed: runs with different settings are compared by what they
learned, not only by their loss.

Everything shown is the runs session's (`studio.core.sessions.runs`): its one scan of the runs folder, run by the
window in the background, fills the table, and the view redraws whenever the session says the runs changed.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QMenu, QMessageBox, QPushButton, QSplitter,
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)
from superqt.utils import signals_blocked

from studio.core.sessions.continuation import CONTINUE_LABELS, PAIRED_DATA
from studio.core.sessions.runs import RunActionError, RunRow, RunsChange, RunsSession, score_title
from studio.core.system.units import format_bytes, format_duration
from studio.ui.widgets import _plot_style as style

__all__ = ["QtRunsView"]

COLUMNS = ("Run", "Model", "Dataset", "Status", "Steps", "Final loss", "Best loss", "Best eval", "Duration", "Adapter",
           "Started")
STATUS_COLOURS = {"completed": "#1b7f3b", "stopped": "#8a6d00", "failed": "#b00020", "running": "#1f4e9c",
                  "new": "#707070"}
CURVE_COLOURS = (style.BLUE, style.ORANGE, style.GREEN, style.RED, "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", style.GREY)
OVERLAY_SMOOTHING = 0.6
SELECT_HINT = "Select runs to overlay their loss curves (Ctrl- or Shift-click for several)."


class _SortableItem(QTableWidgetItem):
    """A cell that sorts by a hidden key (numbers as numbers, unknown values last)."""

    def __init__(self, text: str, key):
        super().__init__(text)
        self._key = key

    def __lt__(self, other):  # noqa: D105 - Qt API
        mine, theirs = self._key, getattr(other, "_key", None)
        if mine is None or theirs is None:
            return theirs is None and mine is not None
        return mine < theirs


def _short_name(value: str) -> str:
    """A local model folder or data file by its last two parts ('demo/model'); a Hub id stays whole."""
    if not value:
        return "—"
    path = Path(value)
    return f"{path.parent.name}/{path.name}" if path.is_absolute() and path.parent.name else value


def _loss_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _ema(values: list[float], weight: float) -> np.ndarray:
    out, previous = np.empty(len(values)), None
    for i, value in enumerate(values):
        if np.isfinite(value):
            previous = value if previous is None else weight * previous + (1 - weight) * value
        out[i] = np.nan if previous is None else previous
    return out


class QtRunsView(QWidget):
    """Every run of a RunsSession, redrawn when the session says the runs changed.

    Signals: `open_config_requested(RunConfig)`, `resume_requested(RunDirectory)`, `refreshed()` (the table shows
    the session's rows).
    """

    open_config_requested = Signal(object)
    resume_requested = Signal(object)
    refreshed = Signal()

    def __init__(self, runs: RunsSession, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs = runs
        self.summaries: list[RunRow] = []
        self.score_columns: list[str] = []  # the metrics shown after COLUMNS
        self.overlay: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # run name -> (steps, raw losses) drawn

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        # Newest first until the user clicks another header (the README's promise; Qt would sort by name).
        self.table.sortByColumn(COLUMNS.index("Started"), Qt.SortOrder.DescendingOrder)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setHighlightSections(False)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.table.doubleClicked.connect(lambda _: self.open_selected_config())

        self.refresh_button = QPushButton("Refresh")
        self.open_config_button = QPushButton("Open config")
        self.open_config_button.setToolTip("Load the selected run's settings into the Config tab")
        self.continue_button = QPushButton("Continue with…")
        self.continue_button.setToolTip("A new run that trains the selected run's adapter further with another method "
                                        "(SFT first, then DPO, ORPO, KTO or GRPO); its settings open on the Config tab")
        continue_menu = QMenu(self.continue_button)
        for method, label in CONTINUE_LABELS.items():
            continue_menu.addAction(label, lambda method=method: self.continue_selected(method))
        self.continue_button.setMenu(continue_menu)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected run from its latest checkpoint on the Training tab")
        self.rename_button = QPushButton("Rename…")
        self.rename_button.setToolTip("Give the selected run another name (its folder under the runs folder)")
        self.rename_button.clicked.connect(self.rename_selected)
        self.delete_button = QPushButton("Delete…")
        self.refresh_button.clicked.connect(self.refresh)
        self.open_config_button.clicked.connect(self.open_selected_config)
        self.resume_button.clicked.connect(self.resume_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.info_label = QLabel(SELECT_HINT)
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self._plot_widget = style.make_plot_widget("Training loss (smoothed) of the selected runs", "step", "loss")
        self._plot_widget.setMinimumHeight(220)
        self._legend = style.add_legend(self._plot_widget.getPlotItem())
        style.make_axes_cheap(self._plot_widget.getPlotItem(), left_axis_width=44)  # as the Training tab's plots
        self._curves: list[pg.PlotDataItem] = []

        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.open_config_button, self.continue_button, self.resume_button,
                       self.rename_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(buttons)
        top_layout.addWidget(self.table, stretch=1)
        top_layout.addWidget(self.info_label)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self._plot_widget)
        splitter.setSizes([330, 360])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        unsubscribe = runs.subscribe(self._on_runs_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self._show(runs.rows)

    @property
    def training_busy(self) -> bool:
        """Whether the window's Training tab is running a run (then no other can be resumed from here)."""
        return self.runs.training_here is not None

    # --- loading -------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Ask the session to scan the runs folder again (in the window, in the background); `refreshed` is
        emitted when the table shows the result."""
        self.runs.request_refresh()

    def refresh_now(self) -> None:
        """Scan the runs folder on this thread (tests)."""
        self.runs.refresh_now()

    def _on_runs_changed(self, _change: RunsChange) -> None:
        self._show(self.runs.rows)

    def _show(self, summaries: list[RunRow]) -> None:
        selected = set(self.selected_paths())
        self.summaries = summaries
        self.score_columns = self.runs.score_columns()
        self.table.setSortingEnabled(False)
        with signals_blocked(self.table):
            self.table.clearContents()
            self.table.setColumnCount(len(COLUMNS) + len(self.score_columns))
            self.table.setHorizontalHeaderLabels([*COLUMNS, *(score_title(name) for name in self.score_columns)])
            for offset, name in enumerate(self.score_columns):
                header = self.table.horizontalHeaderItem(len(COLUMNS) + offset)
                header.setToolTip(f"{score_title(name)}: how many replies passed in the run's latest eval")
            self.table.setRowCount(len(summaries))
            for row, summary in enumerate(summaries):
                for column, item in enumerate(self._row_items(summary) + self._score_items(summary)):
                    item.setData(Qt.ItemDataRole.UserRole, str(summary.path))
                    self.table.setItem(row, column, item)
            self.table.setSortingEnabled(True)
            for row in range(self.table.rowCount()):
                if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) in {str(p) for p in selected}:
                    self.table.selectRow(row)
        self._on_selection_changed()
        self.refreshed.emit()

    def _row_items(self, s: RunRow) -> list[QTableWidgetItem]:
        steps = "—" if s.step is None else (f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step))
        started = (datetime.datetime.fromtimestamp(s.started_at).strftime("%Y-%m-%d %H:%M")
                   if s.started_at else "—")
        status = s.status + (f" ({s.failure_kind})" if s.failure_kind else "")
        items = [
            _SortableItem(s.name, s.name.lower()),
            _SortableItem(_short_name(s.model), s.model),
            _SortableItem(_short_name(s.dataset), s.dataset),
            _SortableItem(status, s.status),
            _SortableItem(steps, s.step),
            _SortableItem(_loss_text(s.final_loss), s.final_loss),
            _SortableItem(_loss_text(s.best_loss), s.best_loss),
            _SortableItem(_loss_text(s.best_eval_loss), s.best_eval_loss),
            _SortableItem(format_duration(s.duration_s), s.duration_s),
            _SortableItem(format_bytes(s.adapter_bytes), s.adapter_bytes),
            _SortableItem(started, s.started_at),
        ]
        items[1].setToolTip(s.model)
        items[2].setToolTip(s.dataset)
        items[3].setForeground(QColor(STATUS_COLOURS.get(s.status, style.FOREGROUND)))
        if s.message:
            items[3].setToolTip(s.message)
        for item in items[4:]:
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return items

    def _score_items(self, s: RunRow) -> list[QTableWidgetItem]:
        items = []
        for name in self.score_columns:
            count = s.scores.metrics.get(name) if s.scores is not None else None
            if count is None:
                item = _SortableItem("—", None)
                item.setToolTip("not scored: evaluate this run on the Evaluate tab" if s.scores is None
                                else f"its latest eval ({s.scores.eval_name}) did not score {score_title(name)}")
            else:
                item = _SortableItem(count.text, count.fraction)
                mean = f"; mean score {count.mean_score:.2f}" if count.mean_score is not None else ""
                item.setToolTip(f"{count.text} passed{mean} — {s.scores.describe()}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            items.append(item)
        return items

    # --- selection and overlay ------------------------------------------------------------------------------
    def selected_paths(self) -> list[Path]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [Path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)) for row in rows
                if self.table.item(row, 0) is not None]

    def selected_summaries(self) -> list[RunRow]:
        by_path = {s.path: s for s in self.summaries}
        return [by_path[p] for p in self.selected_paths() if p in by_path]

    def select_runs(self, names: list[str]) -> None:
        """Select the runs with these names (tests, and re-selecting after a refresh)."""
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() in names:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def _on_selection_changed(self) -> None:
        for curve in self._curves:
            self._plot_widget.getPlotItem().removeItem(curve)
        self._legend.clear()
        self._curves, self.overlay = [], {}
        selected = self.selected_summaries()
        for i, summary in enumerate(selected):
            metrics = self.runs.metrics(summary.path)
            steps = np.asarray(metrics.steps, dtype=float)
            losses = np.asarray(metrics.series["loss"], dtype=float)
            self.overlay[summary.name] = (steps, losses)
            curve = self._plot_widget.getPlotItem().plot(
                steps, _ema(list(losses), OVERLAY_SMOOTHING), name=summary.name,
                pen=pg.mkPen(CURVE_COLOURS[i % len(CURVE_COLOURS)], width=2), connect="finite")
            style.enable_fast_downsampling(curve, "mean")
            self._curves.append(curve)
        self._plot_widget.getPlotItem().enableAutoRange()
        self._legend.setVisible(bool(selected))  # an empty legend is a stray box in the corner
        if not self.summaries:
            self.info_label.setText(f"No runs yet. Start one on the Training tab; every run is kept in "
                                    f"{self.runs.root} and listed here.")
        elif not selected:
            self.info_label.setText(SELECT_HINT)
        if len(selected) == 1:
            s = selected[0]
            text = f"{s.path}"
            if s.message:
                text += f" — {s.message}"
            if s.checkpoint_steps:
                text += f" — checkpoints at step {', '.join(map(str, s.checkpoint_steps))}"
            self.info_label.setText(text)
        elif selected:
            self.info_label.setText(f"{len(selected)} runs overlaid.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        selected = self.selected_summaries() if self.summaries else []
        one = selected[0] if len(selected) == 1 else None
        self.open_config_button.setEnabled(one is not None and one.run_dir.config_path.is_file())
        self.continue_button.setEnabled(one is not None and one.status == "completed" and one.run_dir.config_path.is_file())
        # A run whose events read stopped or failed may still have a live process (one started from a terminal).
        busy = one.run_dir.busy_message() if one is not None else None
        self.resume_button.setEnabled(one is not None and one.status in ("stopped", "failed")
                                      and bool(one.checkpoint_steps) and not self.training_busy and busy is None)
        self.resume_button.setToolTip("Another run is training: one run at a time" if self.training_busy else
                                      busy or "Continue the selected run from its latest checkpoint on the Training tab")
        self.delete_button.setEnabled(bool(selected) and all(s.status != "running" for s in selected))
        self.rename_button.setEnabled(one is not None and one.status != "running" and busy is None)

    # --- actions ---------------------------------------------------------------------------------------------
    def open_selected_config(self) -> None:
        selected = self.selected_summaries()
        if len(selected) != 1:
            return
        try:
            config = self.runs.settings_of(selected[0].path)
        except RunActionError as error:
            self.info_label.setText(f"Cannot open this run's config: {error}")
            return
        self.open_config_requested.emit(config)

    def continue_selected(self, method: str):
        """Open on the Config tab a new run that trains the selected run's adapter further with `method`."""
        selected = self.selected_summaries()
        if len(selected) != 1:
            return None
        try:
            config = self.runs.continue_with(selected[0].path, method)
        except RunActionError as error:
            self.info_label.setText(f"Cannot continue this run: {error}")
            return None
        if method in PAIRED_DATA:
            self.info_label.setText(f"{CONTINUE_LABELS[method]} from {selected[0].name}: choose a {PAIRED_DATA[method]} "
                                    "file on the Dataset tab, then Start")
        self.open_config_requested.emit(config)
        return config

    def resume_selected(self) -> None:
        selected = self.selected_summaries()
        if len(selected) == 1:
            self.resume_requested.emit(selected[0].run_dir)

    def delete_selected(self) -> list[str]:
        """Delete the selected runs after asking; returns the names deleted."""
        selected = [s for s in self.selected_summaries() if s.status != "running"]
        if not selected or not self.ask_delete_choice([s.name for s in selected]):
            return []
        self.table.clearSelection()
        deleted, refused = self.runs.delete([s.path for s in selected])  # the session tells every tab
        if refused:
            self.info_label.setText(refused[-1])
        return deleted

    def rename_selected(self):
        """Rename the selected run to a name asked for; says why when the name is refused."""
        selected = self.selected_summaries()
        if len(selected) != 1:
            return None
        old = selected[0]
        name = self.ask_new_name(old.name)
        if not name or name.strip() == old.name:
            return None
        try:
            renamed = self.runs.rename(old.path, name)  # the session tells every tab
        except RunActionError as error:
            self.info_label.setText(f"Cannot rename {old.name}: {error}")
            return None
        self.select_runs([renamed.name])
        self.info_label.setText(f"Renamed {old.name} to {renamed.name}.")
        return renamed

    def ask_new_name(self, current: str) -> str | None:
        """The new name, asked in a dialog (tests replace this method); None when cancelled."""
        name, ok = QInputDialog.getText(self, "Rename run", "New name:", text=current)
        return name if ok else None

    def ask_delete_choice(self, names: list[str]) -> bool:
        """Whether to delete these runs, asked in a dialog (tests replace this method)."""
        listed = "\n".join(f"  • {name}" for name in names[:10]) + ("\n  …" if len(names) > 10 else "")
        answer = QMessageBox.question(
            self, "Delete runs",
            f"Delete {len(names)} run(s) with their checkpoints and adapters?\n\n{listed}\n\nThis cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self.refresh()
