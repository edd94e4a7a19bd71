"""Evaluate tab: score the base and tuned runs on held-out examples, side by side.

The choices, the results and what the table marks live in `EvaluateSession` (studio.core.sessions.evaluate);
the eval itself is `run_eval` (studio.core.eval), run through a `TaskRunner`. This module only binds widgets
to the session: the pickers, Start/Cancel with progress, a bar chart per model per metric and the per-example
table with the mismatch marked in each reply.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAbstractTextDocumentLayout, QColor, QPalette, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QListWidget, QListWidgetItem, QMenu, QProgressBar, QPushButton, QRadioButton, QSpinBox,
    QSplitter, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)
from superqt.utils import signals_blocked

from studio.core.sessions.evaluate import (
    EXPECTED_ERRORS, EXTRA, FILTER_HINTS, FILTERS, MISSING, READY_HINT, WRONG, EvaluateSession, ExampleRow, Highlight,
    metric_choices, metric_title, runs_list_status, segments,
)
from studio.core.sessions.runs import RunsChange, RunsSession
from studio.ui.background import BackgroundTask, TaskRunner, describe_error
from studio.ui.widgets import _plot_style as style

__all__ = ["QtEvaluateTab"]

HTML_ROLE = Qt.ItemDataRole.UserRole + 1
MODEL_COLOURS = (style.GREY, style.BLUE, style.ORANGE, style.GREEN, "#9467bd", "#8c564b", "#e377c2", "#17becf")
MARKS = {WRONG: "background:#ffd6d6; color:#8b0000; font-weight:bold;",
         MISSING: "background:#fff0c2; color:#6b4e00; font-weight:bold;",
         EXTRA: "background:#e3dcf5; color:#3b2a78;"}
PASS_COLOUR, FAIL_COLOUR = "#1b7f3b", "#b00020"
CELL_CHARS = 320
"""Characters of a reply shown in a cell (a base model rambling to max tokens would make rows screens tall)."""
CUT_CELL_CHARS = 160
"""For a reply cut at max tokens: its start says enough."""
MAX_ROW_HEIGHT = 160
REDRAW_MS = 150
"""Results arrive a batch at a time: the chart and table are redrawn at most this often."""


def marked_html(text: str, spans, *, limit: int = CELL_CHARS) -> str:
    """The text as HTML with the spans marked (their notes as tooltips are not shown in a cell: in the title)."""
    out = []
    for piece, span in segments(text[:limit], spans):
        escaped = html.escape(piece).replace("\n", "<br>")
        out.append(escaped if span is None else f'<span style="{MARKS.get(span.kind, "")}">{escaped}</span>')
    if len(text) > limit:
        out.append(f'<span style="color:{style.MUTED}">… ({len(text) - limit} more characters)</span>')
    return "".join(out)


class _HtmlDelegate(QStyledItemDelegate):
    """Draws a cell's HTML_ROLE text as rich text (the marked mismatch), wrapped to the column."""

    def __init__(self, table: QTableWidget):
        super().__init__(table)
        self.table = table

    def _document(self, option: QStyleOptionViewItem, index: QModelIndex, width: int) -> QTextDocument:
        document = QTextDocument()
        document.setDefaultFont(option.font)
        document.setHtml(index.data(HTML_ROLE) or html.escape(str(index.data() or "")))
        document.setTextWidth(max(40, width - 8))
        return document

    def paint(self, painter, option, index) -> None:
        self.initStyleOption(option, index)
        document = self._document(option, index, option.rect.width())
        option.text = ""
        option.widget.style().drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, option.widget)
        painter.save()
        painter.translate(option.rect.left() + 4, option.rect.top() + 2)
        clip = QRectF(0, 0, option.rect.width() - 4, option.rect.height() - 2)
        painter.setClipRect(clip)
        context = QAbstractTextDocumentLayout.PaintContext()
        context.clip = clip
        if option.state & QStyle.StateFlag.State_Selected:
            context.palette.setColor(QPalette.ColorRole.Text, option.palette.color(QPalette.ColorRole.HighlightedText))
        document.documentLayout().draw(painter, context)
        painter.restore()

    def sizeHint(self, option, index) -> QSize:
        document = self._document(option, index, self.table.columnWidth(index.column()))
        return QSize(int(document.idealWidth()) + 8, min(MAX_ROW_HEIGHT, int(document.size().height()) + 4))


class QtEvaluateTab(QWidget):
    """Signals: `open_in_chat(model, messages)` — a run directory (Path) or, for the base column, the base
    model's name (str), and a case's prompt messages; `eval_finished(str)` with the outcome's status."""

    open_in_chat = Signal(object, object)
    eval_finished = Signal(str)

    def __init__(self, runs: RunsSession, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs = runs
        self.session = EvaluateSession()
        self.tasks = TaskRunner(self)
        self._task: BackgroundTask | None = None
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self._draw)
        self.shown_rows: list[ExampleRow] = []
        self.bar_labels: list[pg.TextItem] = []
        self._run_order: list[Path] = []  # runs ticked by choose_runs, in the order given: the first is loaded

        self._build_choices()
        self._build_results()
        layout = QVBoxLayout(self)
        layout.addLayout(self.choices)
        layout.addLayout(self.start_row)
        layout.addWidget(self.results, stretch=1)
        # The runs listed are the runs session's: a run that ends, is renamed or deleted anywhere shows here.
        unsubscribe = runs.subscribe(self._on_runs_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self.refresh_runs()
        self._update_buttons()

    # --- layout ---------------------------------------------------------------------------------------------
    def _build_choices(self) -> None:
        models = QGroupBox("Models (each a column)")
        self.runs_list = QListWidget()
        self.runs_list.setMaximumHeight(96)
        self.runs_list.setToolTip("Runs with a finished adapter; tick the ones to compare (one base model)")
        self.base_check = QCheckBox("The base model alone (adapters off)")
        self.base_check.setChecked(True)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.runs.request_refresh)
        box = QGridLayout(models)
        box.addWidget(self.runs_list, 0, 0, 1, 2)
        box.addWidget(self.base_check, 1, 0)
        box.addWidget(refresh, 1, 1)

        data = QGroupBox("Eval set")
        self.held_out_radio = QRadioButton("The first run's held-out split (never trained on)")
        self.file_radio = QRadioButton("A data file:")
        self.held_out_radio.setChecked(True)
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("any file or Hub id the Dataset tab reads")
        self.data_edit.textEdited.connect(lambda _: self.file_radio.setChecked(True))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_data)
        self.last_turn_check = QCheckBox("Only the last assistant turn of each conversation")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(self.session.max_new_tokens)
        self.max_tokens.setToolTip("A reply that reaches this length is cut and marked (a model that never stops)")
        box = QGridLayout(data)
        box.addWidget(self.held_out_radio, 0, 0, 1, 3)
        box.addWidget(self.file_radio, 1, 0)
        box.addWidget(self.data_edit, 1, 1)
        box.addWidget(browse, 1, 2)
        box.addWidget(self.last_turn_check, 2, 0, 1, 3)
        box.addWidget(QLabel("Max new tokens"), 3, 0)
        box.addWidget(self.max_tokens, 3, 1)

        metrics = QGroupBox("Metrics")
        self.metric_checks: dict[str, QCheckBox] = {}
        box = QGridLayout(metrics)
        choices = metric_choices()
        for i, choice in enumerate(choices):
            check = QCheckBox(choice.title)
            check.setToolTip(choice.description)
            check.setChecked(choice.default_on)
            self.metric_checks[choice.name] = check
            box.addWidget(check, i // 2, i % 2)
        self.pattern_edit = QLineEdit()
        self.pattern_edit.setPlaceholderText("regex, e.g. get_bill\\(.*\"phone\"")
        self.pattern_edit.textEdited.connect(lambda text: self.metric_checks["regex"].setChecked(bool(text)))
        box.addWidget(self.pattern_edit, (len(choices) + 1) // 2, 0, 1, 2)

        self.choices = QHBoxLayout()
        self.choices.addWidget(models, stretch=3)
        self.choices.addWidget(data, stretch=3)
        self.choices.addWidget(metrics, stretch=2)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Evaluate; an eval that was cancelled resumes where it stopped")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        self.status = QLabel(READY_HINT)
        self.status.setWordWrap(True)
        self.start_row = QHBoxLayout()
        self.start_row.addWidget(self.start_button)
        self.start_row.addWidget(self.cancel_button)
        self.start_row.addWidget(self.progress, stretch=1)
        self.start_row.addWidget(self.status, stretch=3)

    def _build_results(self) -> None:
        self.chart = style.make_plot_widget("Passed, per model per metric", None, "share of cases passed")
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.setMenuEnabled(False)
        self.chart.hideButtons()
        self.chart.setMinimumHeight(150)
        self.chart.setYRange(0, 1.25, padding=0)
        self.bars: list[pg.BarGraphItem] = []
        self.metric_ticks: list[str] = []
        """The chart's metric labels under the bars, left to right."""

        self.filter_box = QComboBox()
        for name in FILTERS:
            self.filter_box.addItem(name.capitalize(), name)
            self.filter_box.setItemData(self.filter_box.count() - 1, FILTER_HINTS[name], Qt.ItemDataRole.ToolTipRole)
        self.filter_box.currentIndexChanged.connect(lambda _: self._draw_table())
        self.judge_box = QComboBox()
        self.judge_box.setToolTip("The metric whose verdicts the filters and the marks follow")
        self.judge_box.currentIndexChanged.connect(self._on_judge_chosen)
        self.rows_label = QLabel()
        self.legend_label = QLabel(
            f'Marked: <span style="{MARKS[WRONG]}">wrong</span> '
            f'<span style="{MARKS[MISSING]}">missing</span> <span style="{MARKS[EXTRA]}">extra</span>'
            " · right-click a row to open it in Chat")
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show"))
        filters.addWidget(self.filter_box)
        filters.addWidget(QLabel("judged by"))
        filters.addWidget(self.judge_box)
        filters.addWidget(self.rows_label)
        filters.addStretch(1)
        filters.addWidget(self.legend_label)

        self.table = QTableWidget(0, 0)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setItemDelegate(_HtmlDelegate(self.table))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.horizontalHeader().sectionResized.connect(lambda *_: self.table.resizeRowsToContents())

        below = QWidget()
        layout = QVBoxLayout(below)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.table)
        self.results = QSplitter(Qt.Orientation.Vertical)
        self.results.addWidget(self.chart)
        self.results.addWidget(below)
        self.results.setStretchFactor(1, 3)
        self.results.setSizes([220, 560])  # the table is what a user reads; the chart is the overview

    # --- choices ------------------------------------------------------------------------------------------
    def _on_runs_changed(self, change: RunsChange) -> None:
        # A renamed run keeps its tick under its new folder.
        renamed = dict(change.renamed)
        self._run_order = [renamed.get(run, run) for run in self._run_order]
        self.refresh_runs(renamed)

    def refresh_runs(self, renamed: dict[Path, Path] | None = None) -> None:
        """List the runs session's runs with a finished adapter (newest first), keeping the ticks of those still
        there."""
        ticked = {(renamed or {}).get(run, run) for run in self.chosen_runs()}
        self.runs_list.clear()
        for row in self.runs.finished_runs():
            item = QListWidgetItem(row.name)
            item.setData(Qt.ItemDataRole.UserRole, str(row.path))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if row.path in ticked else Qt.CheckState.Unchecked)
            item.setToolTip(str(row.path))
            self.runs_list.addItem(item)
        self.status.setText(runs_list_status(self.runs_list.count(), self.status.text()))

    def chosen_runs(self) -> list[Path]:
        items = [self.runs_list.item(i) for i in range(self.runs_list.count())]
        return [Path(item.data(Qt.ItemDataRole.UserRole)) for item in items
                if item.checkState() == Qt.CheckState.Checked]

    def choose_runs(self, runs: list[Path]) -> None:
        """Tick these runs (and untick the others); the first one listed here is the first column."""
        wanted = [Path(run) for run in runs]
        self.refresh_runs()
        for i in range(self.runs_list.count()):
            item = self.runs_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if Path(item.data(Qt.ItemDataRole.UserRole)) in wanted
                               else Qt.CheckState.Unchecked)
        self._run_order = wanted

    def set_eval_file(self, path: Path | str) -> None:
        self.data_edit.setText(str(path))
        self.file_radio.setChecked(True)

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose an eval set", "", "Data (*.jsonl *.json *.csv *.parquet)")
        if path:
            self.set_eval_file(path)

    def read_choices(self) -> None:
        """Copy the widgets into the session."""
        runs = self.chosen_runs()
        order = self._run_order
        runs.sort(key=lambda run: order.index(run) if run in order else len(order))
        self.session.set_runs(runs)
        self.session.include_base = self.base_check.isChecked()
        self.session.choose_eval_set(self.data_edit.text().strip() if self.file_radio.isChecked() else None)
        self.session.last_turn_only = self.last_turn_check.isChecked()
        self.session.max_new_tokens = self.max_tokens.value()
        self.session.metrics = [name for name, check in self.metric_checks.items() if check.isChecked()]
        self.session.pattern = self.pattern_edit.text()

    # --- running ------------------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._task is not None and self._task.running

    def start(self) -> BackgroundTask | None:
        """Start (or resume) the eval the widgets describe; None when a choice is missing (the status says)."""
        if self.is_running:
            return None
        self.read_choices()
        if (problem := self.session.problem()) is not None:
            self.status.setText(problem)
            return None
        session = self.session

        def work(state):
            return session.evaluate(task=state)

        self.status.setText("Reading the eval set and loading the model…")
        self.progress.setRange(0, 0)
        self._task = self.tasks.start(
            work, on_partial=self._on_partial, on_progress=self._on_progress, on_result=self._on_finished,
            on_error=self._on_error, on_cancelled=self._on_cancelled, on_done=self._update_buttons,
            expected_errors=EXPECTED_ERRORS, name="evaluate")
        self._update_buttons()
        return self._task

    def cancel(self) -> None:
        """Stop the eval (within a generation step); its results so far stay on disk and Start resumes."""
        if self.is_running:
            self.status.setText("Cancelling…")
            self.tasks.cancel()
            self.cancel_button.setEnabled(False)

    def shutdown(self) -> None:
        self.tasks.shutdown()

    def _on_partial(self, value) -> None:
        kind, *rest = value
        if kind == "job":
            self.session.start(rest[0])
            self._fill_judges()
        elif kind == "start":
            self.session.started(*rest)
        else:
            self.session.add_result(rest[0])
        if not self._redraw.isActive():
            self._redraw.start()

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.session.progressed(done, total, message)
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status.setText(message)

    def _on_finished(self, outcome) -> None:
        self.session.finish(outcome)
        self.progress.setRange(0, max(1, self.session.total))
        self.progress.setValue(self.session.done)
        self.status.setText(self.session.message)
        self._draw()
        self.eval_finished.emit(outcome.status)

    def _on_error(self, error: BaseException) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(f"The eval failed: {describe_error(error)}")
        self.eval_finished.emit("failed")

    def _on_cancelled(self) -> None:
        self.session.cancelled()
        self.status.setText(self.session.message)
        self._draw()
        self.eval_finished.emit("cancelled")

    def _update_buttons(self) -> None:
        running = self.is_running
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    # --- drawing ----------------------------------------------------------------------------------------------
    def _fill_judges(self) -> None:
        current = self.session.judging_metric
        with signals_blocked(self.judge_box):
            self.judge_box.clear()
            for name in self.session.metric_names():
                self.judge_box.addItem(metric_title(name), name)
            self.judge_box.setCurrentIndex(max(0, self.judge_box.findData(current)))

    def _on_judge_chosen(self, _index: int) -> None:
        self.session.judge = self.judge_box.currentData() or ""
        self._draw_table()

    def _draw(self) -> None:
        self._redraw.stop()
        self._draw_chart()
        self._draw_table()

    def _model_colour(self, model: str) -> str:
        """Grey for the base, the same colour for a model in the chart and its table column."""
        if model == self.session.base_column:
            return MODEL_COLOURS[0]
        index = self.session.tuned_columns.index(model) if model in self.session.tuned_columns else 0
        return MODEL_COLOURS[1 + index % (len(MODEL_COLOURS) - 1)]

    def _draw_chart(self) -> None:
        plot = self.chart.getPlotItem()
        for item in self.bars + self.bar_labels:
            plot.removeItem(item)
        self.bars, self.bar_labels = [], []
        summary = self.session.summary()
        metrics = self.session.metric_names()
        models = [m for m in self.session.columns if m in summary]
        if not models:
            return
        width = 0.8 / len(models)
        # The legend is in the title: inside the plot it would cover the bars of the last metric.
        keys = " &nbsp; ".join(f'<span style="color:{self._model_colour(model)}">■</span> {html.escape(model)}'
                               for model in models)
        plot.setTitle(f"Passed, per model per metric &nbsp;&nbsp; {keys}", color=style.FOREGROUND, size="11pt")
        for m_index, model in enumerate(models):
            colours = self._model_colour(model)
            xs = np.arange(len(metrics)) - 0.4 + width * (m_index + 0.5)
            heights = [summary[model][metric].share for metric in metrics]
            bars = pg.BarGraphItem(x=xs, height=heights, width=width * 0.92, brush=colours, pen=pg.mkPen(colours))
            plot.addItem(bars)
            self.bars.append(bars)
            for x, metric in zip(xs, metrics):
                count = summary[model][metric]
                label = pg.TextItem(str(count), color=style.FOREGROUND, anchor=(0.5, 1.0))
                label.setPos(float(x), count.share + 0.01)
                plot.addItem(label)
                self.bar_labels.append(label)
        titles = self.session.metric_titles()
        self.metric_ticks = [titles[name] for name in metrics]
        plot.getAxis("bottom").setTicks([list(enumerate(self.metric_ticks))])
        plot.setXRange(-0.55, len(metrics) - 0.45, padding=0)
        plot.setYRange(0, 1.25, padding=0)

    def bar_texts(self) -> list[str]:
        """The count labels on the chart's bars ("41/47"), model by model."""
        return [label.textItem.toPlainText() for label in self.bar_labels]

    def _draw_table(self) -> None:
        which = self.filter_box.currentData() or FILTERS[0]
        rows = self.session.rows(which)
        models = list(self.session.columns)
        headers = ["#", "Prompt", "Expected", *models]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        for c, model in enumerate(models, start=3):
            self.table.horizontalHeaderItem(c).setForeground(QColor(self._model_colour(model)))
        self.table.setRowCount(len(rows))
        judge = self.session.judging_metric
        for r, row in enumerate(rows):
            self._set(r, 0, row.case, row.case)
            self._set(r, 1, row.question, self._prompt_html(row))
            # The expected reply is marked as the first tuned model got it wrong (the base's misses would
            # mark the whole call in nearly every row).
            tuned = [row.records[m] for m in self.session.tuned_columns if m in row.records]
            expected_spans = next((mark.expected for mark in map(self.session.highlight, tuned) if mark.expected), ())
            self._set(r, 2, row.expected, marked_html(row.expected, expected_spans))
            for c, model in enumerate(models, start=3):
                record = row.records.get(model)
                if record is None:
                    self._set(r, c, "", f'<span style="color:{style.MUTED}">not answered yet</span>')
                    continue
                self._set(r, c, record["reply"], self._reply_html(record, self.session.highlight(record)),
                          tooltip=self._reply_tooltip(record, judge))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        for c in range(1, len(headers)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)
        self.table.resizeRowsToContents()
        self.shown_rows = rows
        total = len(self.session.rows())
        self.rows_label.setText(f"{len(rows)} of {total} examples")

    def _set(self, row: int, column: int, text: str, rich: str, tooltip: str = "") -> None:
        item = QTableWidgetItem(text)
        item.setData(HTML_ROLE, rich)
        if tooltip:
            item.setToolTip(tooltip)
        self.table.setItem(row, column, item)

    @staticmethod
    def _prompt_html(row: ExampleRow) -> str:
        earlier = len(row.prompt) - 1
        before = (f'<span style="color:{style.MUTED}">({earlier} earlier turn{"s" * (earlier != 1)})</span><br>'
                  if earlier > 0 else "")
        return before + marked_html(row.question, ())

    def _reply_html(self, record: dict, mark: Highlight) -> str:
        verdicts = []
        for name in self.session.metric_names():
            score = record.get("scores", {}).get(name)
            if score is None:
                continue
            ok = score["passed"]
            verdicts.append(f'<span style="color:{PASS_COLOUR if ok else FAIL_COLOUR}">'
                            f'{"✓" if ok else "✗"} {html.escape(metric_title(name))}</span>')
        notes = "".join(f'<br><span style="{MARKS[MISSING]}">{html.escape(note)}</span>' for note in mark.notes)
        cut = f' <span style="color:{style.MUTED}">(cut at max tokens)</span>' if record.get("truncated") else ""
        limit = CUT_CELL_CHARS if record.get("truncated") else CELL_CHARS
        return (f"{marked_html(record['reply'], mark.reply, limit=limit)}{cut}{notes}"
                f'<br><small>{" &nbsp;".join(verdicts)}</small>')

    def _reply_tooltip(self, record: dict, judge: str) -> str:
        mark = self.session.highlight(record, judge)
        lines = [mark.reason] if mark.reason else []
        lines += [span.note for span in mark.reply if span.note]
        return "\n".join(lines)

    # --- Open in Chat --------------------------------------------------------------------------------------
    def _context_menu(self, position) -> None:
        index = self.table.indexAt(position)
        if not index.isValid() or index.row() >= len(self.shown_rows):
            return
        menu = QMenu(self)
        clicked = index.column() - 3
        models = list(self.session.columns)
        if 0 <= clicked < len(models):  # the column clicked first
            models.insert(0, models.pop(clicked))
        row = index.row()
        for model in models:
            action = menu.addAction(f"Open in Chat with {model}")
            action.triggered.connect(lambda _=False, model=model: self.open_row_in_chat(row, model))
        menu.popup(self.table.viewport().mapToGlobal(position))

    def open_row_in_chat(self, row: int, model: str) -> None:
        """Emit open_in_chat for a shown row's prompt, answered by `model`'s run (or the base)."""
        case = self.shown_rows[row]
        target = self.session.chat_target(model)
        self.open_in_chat.emit(target if target is not None else self.session.base_model(), list(case.prompt))
