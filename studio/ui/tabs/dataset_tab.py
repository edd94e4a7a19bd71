"""Dataset tab: open any common dataset, see how it is read, exactly what trains, and every bad row.

The tab builds widgets and binds them to a `DatasetSession` (studio.core.sessions.dataset), which holds all its
state and decisions: the source and how it is read (in the run draft the Config tab edits too), the reading and
its problems, the rows, the selected row's preview, the token statistics and the held-out split. Every widget
edit is written into the session; every change of the session, made here or elsewhere, re-renders the aspects it
names. The work the session asks for (reading, loading the tokenizer, counting tokens) runs on the tab's
TaskRunners, calling the session's task functions; the first rows appear while the rest is read. The preview goes
through `data_preview.preview_example`, i.e. the trainer's own `encode_example`, so the highlighted tokens are the
trained ones; with a method beyond SFT a pair's chosen and rejected replies are previewed side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel,
    QLineEdit, QProgressBar, QPushButton, QRadioButton, QSplitter, QTabWidget, QVBoxLayout, QWidget,
)
from superqt.utils import signals_blocked

from studio.core.sessions.dataset import (
    EVERYTHING, FILE_DIALOG_FILTER, MODEL, PREVIEW, PROGRESS, READ, READ_ERRORS, ROWS, SETTINGS, STATS,
    TEXT_SPLIT_LABELS, DatasetSession, EvaluationView, eval_fraction_range, example_cells, load_model_tokenizer,
    measure_lengths, read_source, table_headers,
)
from studio.core.sessions.grow import GrowSession
from studio.ui.background import TaskRunner, freeze_heap, no_gc_while_importing
from studio.ui.widgets.qt_column_mapping import QtColumnMapping
from studio.ui.widgets.qt_data_errors import QtDataErrorsPanel
from studio.ui.widgets.qt_examples_table import QtExamplesTable
from studio.ui.widgets.qt_grow_panel import QtGrowPanel
from studio.ui.widgets.qt_token_histogram import QtTokenHistogram
from studio.ui.widgets.qt_token_view import MASKED_TEXT, QtTokenView, legend_html


class QtEvalSplitPanel(QWidget):
    """No evaluation, a seeded fraction of the training rows, or a separate file: shows the session's
    EvaluationView and signals the user's `chosen(choice, fraction, file)`."""

    chosen = Signal(str, float, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.none_radio = QRadioButton("No evaluation")
        self.fraction_radio = QRadioButton("Hold out a fraction of the training rows")
        self.file_radio = QRadioButton("Evaluate on a separate file")
        self.group = QButtonGroup(self)
        for button in (self.none_radio, self.fraction_radio, self.file_radio):
            self.group.addButton(button)
        self.fraction_spin = QDoubleSpinBox()
        lowest, highest, step, decimals = eval_fraction_range()
        self.fraction_spin.setRange(lowest, highest)
        self.fraction_spin.setSingleStep(step)
        self.fraction_spin.setDecimals(decimals)
        self.fraction_spin.setToolTip("data.eval_fraction: the rows are drawn with training.seed, so the split is the "
                                      "same every run.")
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("an eval file of the same shape")
        self.file_edit.setToolTip("data.eval_file")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        grid = QGridLayout(self)
        grid.addWidget(self.none_radio, 0, 0, 1, 3)
        grid.addWidget(self.fraction_radio, 1, 0)
        grid.addWidget(self.fraction_spin, 1, 1)
        grid.addWidget(self.file_radio, 2, 0)
        grid.addWidget(self.file_edit, 2, 1)
        grid.addWidget(self.browse_button, 2, 2)
        grid.addWidget(self.counts_label, 3, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(4, 1)
        self.group.buttonToggled.connect(lambda button, checked: checked and self._emit())
        self.fraction_spin.valueChanged.connect(self._emit)
        self.file_edit.editingFinished.connect(self._emit)

    def show_view(self, view: EvaluationView) -> None:
        radio = {"none": self.none_radio, "fraction": self.fraction_radio, "file": self.file_radio}[view.choice]
        with signals_blocked(self.group), signals_blocked(self.fraction_spin), signals_blocked(self.file_edit):
            radio.setChecked(True)
            self.fraction_spin.setValue(view.fraction)
            if not self.file_edit.hasFocus():
                self.file_edit.setText(view.file)
        self.fraction_spin.setEnabled(view.choice == "fraction")
        self.file_edit.setEnabled(view.choice == "file")
        self.browse_button.setEnabled(view.choice == "file")
        self.counts_label.setText(view.counts)

    def _emit(self, *_args) -> None:
        choice = "fraction" if self.fraction_radio.isChecked() else "file" if self.file_radio.isChecked() else "none"
        self.chosen.emit(choice, self.fraction_spin.value(), self.file_edit.text())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose an eval file", "", FILE_DIALOG_FILTER)
        if path:
            self.chosen.emit("file", self.fraction_spin.value(), path)


class QtDatasetTab(QWidget):
    """Signals `dataset_chosen(Path)` when a source with at least one usable example has been read,
    `settings_changed()` after the user edits a data setting, `loaded(LoadedData)` when a read ends and
    `load_failed(str)` when a source cannot be read.

    It shows a `DatasetSession` (its own, or the window's, whose draft the Config tab edits too)."""

    dataset_chosen = Signal(Path)
    settings_changed = Signal()
    loaded = Signal(object)
    load_failed = Signal(str)
    stats_ready = Signal(object)
    preview_updated = Signal()

    settings = property(lambda self: self.session.settings)
    data = property(lambda self: self.session.data)
    stats = property(lambda self: self.session.stats)

    def __init__(self, parent=None, *, session: DatasetSession | None = None):
        super().__init__(parent)
        self.session = session if session is not None else DatasetSession()
        self.preview = None
        # One runner per job: a new read cancels the old read, never the tokenizer or the measurement.
        self._reads, self._tokenizers, self._measures = TaskRunner(self), TaskRunner(self), TaskRunner(self)
        self._shown_rows: tuple = (None, "")

        # --- the source bar -----------------------------------------------------------------------
        self.open_button = QPushButton("Open file…")
        self.open_button.setToolTip("JSON, JSONL, CSV, TSV, Parquet, or plain text (.txt, .md)")
        self.open_button.clicked.connect(self._browse)
        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("A folder saved with datasets' save_to_disk, or a folder of data files")
        self.folder_button.clicked.connect(self._browse_folder)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("or type a path or a Hugging Face Hub dataset id and press Enter")
        self.source_edit.returnPressed.connect(lambda: self.open_path(self.source_edit.text()))
        self.split_label = QLabel("split")
        self.split_edit = QLineEdit()
        self.split_edit.setPlaceholderText("train")
        self.split_edit.setFixedWidth(self.fontMetrics().horizontalAdvance("validation") + 24)
        self.split_edit.setToolTip("data.split: which split of a Hub dataset or a saved DatasetDict to read")
        self.split_edit.editingFinished.connect(lambda: self._edit(split=self.split_edit.text().strip() or "train"))
        self.text_split_combo = QComboBox()  # shown for plain text files only: where one training document ends
        for value, label in TEXT_SPLIT_LABELS.items():
            self.text_split_combo.addItem(label, value)
        self.text_split_combo.setToolTip(
            "data.text_split: how a .txt/.md file is cut into training documents — at blank lines, or not at "
            "all (the whole file is one document)")
        self.text_split_combo.currentIndexChanged.connect(
            lambda: self._edit(text_split=self.text_split_combo.currentData()))
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(180)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_loading)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)

        # --- rows ----------------------------------------------------------------------------------------
        self.table = QtExamplesTable()
        self.rows_model = self.table.examples
        self.table.row_selected.connect(self.select_row)

        # --- bottom panels -------------------------------------------------------------------------------
        self.histogram = QtTokenHistogram()
        self.histogram.measure_all_requested.connect(self.session.measure_all)
        self.errors_panel = QtDataErrorsPanel()
        self.errors_panel.skip_bad_rows_changed.connect(lambda skip: self._edit(skip_bad_rows=skip))
        self.errors_panel.encoding_chosen.connect(lambda encoding: self._edit(encoding=encoding))
        self.mapping_panel = QtColumnMapping()
        self.mapping_panel.mapping_applied.connect(self._on_mapping_applied)
        self.split_panel = QtEvalSplitPanel()
        self.split_panel.chosen.connect(self._on_evaluation_chosen)
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.histogram, "Token lengths")
        self.bottom_tabs.addTab(self.errors_panel, "Problems")
        self.bottom_tabs.addTab(self.mapping_panel, "Columns")
        self.bottom_tabs.addTab(self.split_panel, "Eval split")
        self.grow_panel = QtGrowPanel(GrowSession(self.session))  # more tool-call rows, the held-out apart
        self.bottom_tabs.addTab(self.grow_panel, "Grow")

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.table)
        left.addWidget(self.bottom_tabs)
        left.setSizes([330, 370])

        # --- the preview ---------------------------------------------------------------------------------
        self.preview_title = QLabel("<b>What the model sees</b>")
        self.responses_only_check = QCheckBox("Train on responses only")
        self.responses_only_check.setToolTip("data.train_on_responses_only: the loss is taken on the assistant's "
                                             "replies only; prompts are masked.")
        self.responses_only_check.toggled.connect(lambda checked: self._edit(train_on_responses_only=checked))
        legend = QLabel(legend_html())
        self.preview_info = QLabel()
        self.preview_info.setWordWrap(True)
        self.token_view = QtTokenView()
        self.rejected_view = QtTokenView()  # a pair's rejected reply, beside the chosen one in `token_view`
        self.chosen_title, self.rejected_title = QLabel(), QLabel()
        self.token_info = QLabel(" ")
        self.token_info.setStyleSheet(f"color: {MASKED_TEXT}")
        for view in (self.token_view, self.rejected_view):
            view.token_hovered.connect(lambda text: self.token_info.setText(text or " "))
        preview_box = QWidget()
        preview_layout = QVBoxLayout(preview_box)
        preview_layout.setContentsMargins(6, 0, 0, 0)
        title_row = QHBoxLayout()
        title_row.addWidget(self.preview_title)
        title_row.addStretch(1)
        title_row.addWidget(self.responses_only_check)
        preview_layout.addLayout(title_row)
        preview_layout.addWidget(legend)
        preview_layout.addWidget(self.preview_info)
        sides = QGridLayout()
        sides.setContentsMargins(0, 0, 0, 0)
        sides.addWidget(self.chosen_title, 0, 0)
        sides.addWidget(self.rejected_title, 0, 1)
        sides.addWidget(self.token_view, 1, 0)
        sides.addWidget(self.rejected_view, 1, 1)
        sides.setRowStretch(1, 1)
        preview_layout.addLayout(sides, stretch=1)
        preview_layout.addWidget(self.token_info)

        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(preview_box)
        main.setSizes([580, 580])

        top = QHBoxLayout()
        for widget in (self.open_button, self.folder_button, self.source_edit, self.split_label, self.split_edit,
                       self.text_split_combo, self.progress_bar, self.cancel_button):
            top.addWidget(widget, stretch=int(widget is self.source_edit))
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(main, stretch=1)

        self._tokenizer_timer = QTimer(self)
        self._tokenizer_timer.setSingleShot(True)
        self._tokenizer_timer.setInterval(400)  # the model path may be typed a key at a time
        self._tokenizer_timer.timeout.connect(self._ensure_tokenizer)
        unsubscribe = self.session.subscribe(self._on_session_changed)
        self.destroyed.connect(lambda *_: unsubscribe())  # the session may outlive the widget
        self._on_session_changed(EVERYTHING)

    # --- the session → the widgets ---------------------------------------------------------------------------
    def _on_session_changed(self, aspects: frozenset) -> None:
        if aspects & {SETTINGS, ROWS, READ}:
            self._render_settings()
        if aspects & {ROWS, PREVIEW}:  # the selected row is the preview's
            self._render_rows()
        if aspects & {READ, PROGRESS, SETTINGS}:
            self._render_reading(mapping=READ in aspects)
        if PREVIEW in aspects:
            self._render_preview()
        if STATS in aspects:
            self._render_stats()
        self._start_wanted_work(model_changed=MODEL in aspects)

    def _render_settings(self) -> None:
        s = self.session.settings
        with signals_blocked(self.responses_only_check):
            self.responses_only_check.setChecked(s.train_on_responses_only)
        self.errors_panel.set_skip_bad_rows(s.skip_bad_rows)
        self.errors_panel.set_encoding(s.encoding or "utf-8")
        self.split_panel.show_view(self.session.evaluation())
        if not self.source_edit.hasFocus():
            self.source_edit.setText(s.train_file)
        self.split_edit.setText(s.split if s.split != "train" else "")
        kind = self.session.source_kind()
        self.split_label.setVisible(kind in ("saved", "folder", "hub"))
        self.split_edit.setVisible(kind in ("saved", "folder", "hub"))
        with signals_blocked(self.text_split_combo):
            self.text_split_combo.setCurrentIndex(max(0, self.text_split_combo.findData(s.text_split)))
        self.text_split_combo.setVisible(kind == "text")

    def _render_rows(self) -> None:
        data, method = self.session.data, self.session.data_method
        if data is not self._shown_rows[0] or method != self._shown_rows[1]:
            self._shown_rows = (data, method)
            self.table.show_examples(data, table_headers(method, data.unit if data is not None else "line"),
                                     example_cells)
        self.table.select(self.session.selected_row)

    def _render_reading(self, *, mapping: bool) -> None:
        session = self.session
        self.progress_bar.setVisible(session.reading)
        self.cancel_button.setVisible(session.reading)
        fraction, rows = session.progress
        self.progress_bar.setValue(int(fraction * 1000))
        self.progress_bar.setFormat(f"{rows:,} rows… %p%" if rows else "reading… %p%")
        self.summary_label.setText(session.summary())
        if mapping:
            problems = session.problems()
            self.errors_panel.show_problems(list(problems.issues), problems.total, rows=problems.rows,
                                            file_error=problems.file_error, guess=problems.guess,
                                            read_as=problems.read_as)
            self.bottom_tabs.setTabText(1, problems.title)
            self.mapping_panel.set_state(session.mapping_data(), session.settings.format, session.mapping())

    def _render_preview(self) -> None:
        shown = self.session.preview()
        self.preview = shown.preview
        self.responses_only_check.setVisible(self.session.shows_conversations)  # TRL trains the replies only
        self.preview_info.setText(shown.info)
        self.chosen_title.setVisible(bool(shown.sides))
        self.rejected_title.setVisible(len(shown.sides) > 1)
        self.rejected_view.setVisible(len(shown.sides) > 1)
        for (title, preview), label, view in zip(shown.sides, (self.chosen_title, self.rejected_title),
                                                 (self.token_view, self.rejected_view)):
            label.setText(title)
            view.show_preview(preview)
        if not shown.sides and shown.preview is not None:
            self.token_view.show_preview(shown.preview)
        elif shown.preview is None:
            self.token_info.setText(" ")
            self.token_view.show_message(shown.message)
        if shown.preview is not None:
            self.preview_updated.emit()

    def _render_stats(self) -> None:
        view = self.session.stats_view()
        self.histogram.show_measurement(view.stats, view.message, max_length=self.session.max_length,
                                        status=view.status, measure_all=view.measure_all)

    # --- the widgets → the session ---------------------------------------------------------------------------
    def _edit(self, **values: Any) -> None:
        """Write the user's edit into the session; `settings_changed` once it changed something."""
        if self.session.edit(source=self, **values) is not None:
            self.settings_changed.emit()

    def _on_mapping_applied(self, fmt: str, mapping: dict[str, str]) -> None:
        if self.session.apply_mapping(fmt, mapping, source=self) is not None:
            self.settings_changed.emit()

    def _on_evaluation_chosen(self, choice: str, fraction: float, file: str) -> None:
        if self.session.choose_evaluation(choice, fraction=fraction, file=file, source=self) is not None:
            self.settings_changed.emit()

    def select_row(self, row: int) -> None:
        """Show row `row` (0-based) in the preview."""
        self.session.select_row(row)

    def set_config(self, config) -> None:
        """Show a config (a RunConfig): the draft takes it, and the data is read again only if what is read
        changed."""
        self.session.draft.set_config(config)

    def apply_to(self, config) -> None:
        """Write the data settings this tab edits into a config."""
        self.session.apply_to(config)

    def set_max_length(self, max_length: int) -> None:
        self.session.draft.update("training", max_length=max_length)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open dataset", "", FILE_DIALOG_FILTER)
        if path:
            self.open_path(Path(path))

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a saved dataset folder")
        if folder:
            self.open_path(Path(folder))

    def open_path(self, path: Path | str) -> bool:
        """Read a file, folder or Hub id in the background (again, if it is the one shown); False when it cannot
        be opened at all. A different source starts with automatic detection, UTF-8, no column mapping and the
        train split."""
        spec = str(path).strip()
        if not spec:
            return False
        if self.session.open(spec, source=self):
            self.settings_changed.emit()
        return self.session.read_state != "failed"

    # --- the work the session asks for -------------------------------------------------------------------------
    def _start_wanted_work(self, *, model_changed: bool = False) -> None:
        session = self.session
        if session.needs_read():
            self._start_load()
        elif not session.reading and self._reads.busy:
            self._reads.cancel()  # the source was forgotten (or the read just ended)
        request = session.stats_wanted()
        if request is not None:
            freeze_heap()
            session.begin_stats(request)
            self._measures.start(lambda state: measure_lengths(request, state, importing=no_gc_while_importing),
                                 on_partial=lambda stats: session.stats_measured(stats, final=False),
                                 on_result=self._on_stats_done, on_error=session.stats_failed,
                                 name="measure token lengths")
        elif not session.measuring and self._measures.busy:
            self._measures.cancel()
        if session.wants_tokenizer() and self.isVisible() and (model_changed or not self._tokenizer_timer.isActive()):
            self._tokenizer_timer.start()

    def _start_load(self) -> None:
        self._reads.cancel()
        request = self.session.begin_read()
        if not self.session.check_source():
            self._read_ended()
            return
        freeze_heap()
        self._reads.start(lambda state: read_source(request, state, importing=no_gc_while_importing),
                          on_partial=self.session.read_head, on_progress=self.session.read_progressed,
                          on_result=self._on_loaded, on_error=self._on_failed,
                          on_cancelled=lambda: self._on_cancelled(request), expected_errors=READ_ERRORS,
                          name="read dataset")

    def cancel_loading(self) -> None:
        """Stop reading (the rows read so far stay on show) and stop measuring token lengths."""
        self._reads.cancel()
        self._measures.cancel()

    def is_loading(self) -> bool:
        return self.session.reading

    def _on_loaded(self, data: Any) -> None:
        self.session.read_done(data)
        self._read_ended()

    def _on_failed(self, error: BaseException) -> None:
        self.session.read_failed(error)
        self._read_ended()

    def _on_cancelled(self, request: Any) -> None:
        if self.session.read_cancelled(request):  # not when replaced by a newer read
            self.load_failed.emit("cancelled")

    def _read_ended(self) -> None:
        """Show the panel the reading asks to be looked at, and tell the window."""
        panel = {"columns": self.mapping_panel, "problems": self.errors_panel}.get(self.session.attention())
        if panel is not None:
            self.bottom_tabs.setCurrentWidget(panel)
        data = self.session.data
        if self.session.read_state == "failed":
            self.load_failed.emit(self.session.file_error)
            return
        self.loaded.emit(data)
        if len(data.examples):
            self.dataset_chosen.emit(Path(self.session.settings.train_file))

    def _on_stats_done(self, stats: Any) -> None:
        self.session.stats_measured(stats, final=True)
        if stats is not None:
            self.stats_ready.emit(stats)

    def _ensure_tokenizer(self) -> None:
        name = self.session.begin_tokenizer()
        if not name:
            return
        freeze_heap()
        trust = self.session.trust_remote_code
        # Any exception is the model's answer (a wrong path, an unreachable Hub id), shown in one line, not a fault.
        self._tokenizers.start(
            lambda state: load_model_tokenizer(name, trust_remote_code=trust, importing=no_gc_while_importing),
            on_result=lambda tokenizer: self._on_tokenizer_loaded(name, tokenizer),
            on_error=lambda error: self.session.tokenizer_failed(name, error),
            on_done=lambda: self.session.tokenizer_ended(name), expected_errors=(Exception,), name="load tokenizer")

    def _on_tokenizer_loaded(self, name: str, tokenizer: Any) -> None:
        freeze_heap()  # the tokenizer brought torch and transformers with it
        self.session.tokenizer_loaded(name, tokenizer)

    # --- lifecycle ------------------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self.session.wants_tokenizer():
            QTimer.singleShot(0, self._ensure_tokenizer)

    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Stop every background task of the tab and wait for it (before the window closes)."""
        self._tokenizer_timer.stop()
        for runner in (self._reads, self._measures, self._tokenizers, self.grow_panel.paraphrases):
            runner.shutdown(timeout_ms)
