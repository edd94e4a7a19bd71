"""Dataset tab: open any common dataset, see how it is read, exactly what trains, and every bad row.

The tab binds widgets to a `DatasetSession` (studio.core.sessions.dataset): the data settings it edits
(format, column mapping, encoding, skip bad rows, eval split, responses only, how a plain text file is cut into
documents) live in the run draft the Config tab edits too, and the tab re-renders when the draft changes
elsewhere. Reading, tokenizer loading and token counting are the session's task functions, run by TaskRunners;
the first rows appear while the rest is read. The preview goes through `data_preview.preview_example`, i.e. the
trainer's own `encode_example`, so the highlighted tokens are the trained ones. With a method beyond SFT
(the Config tab's Method) the session reads the source as that method's training does, the table shows its
columns (prompt / chosen / rejected, prompt / completion / label, prompt / expected reply) and a pair's chosen and
rejected replies are previewed side by side.
"""

from __future__ import annotations

import copy
import html
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QProgressBar, QPushButton, QRadioButton, QSplitter, QTableView, QTabWidget, QVBoxLayout, QWidget,
)

from studio.core.config.settings import (
    DataSettings, RunConfig, TrainingSettings, auto_eval_fraction, config_field, describe_evaluation, field_bounds,
)
from studio.core.data.encoding import ENCODING_NAMES
from studio.core.data.issues import DataError
from studio.core.data.loading import ScanCancelled
from studio.core.data.sources import FILE_DIALOG_FILTER, resolve_source
from studio.core.data.table import LoadedData
from studio.core.sessions.dataset import (
    METHOD_TITLES, STATS_SAMPLE_ROWS, TAB_FIELDS, DatasetSession, example_cells, format_name, load_model_tokenizer,
    measure_lengths, read_source, table_headers,
)
from studio.core.sessions.draft import Change
from studio.ui.background import TaskRunner, freeze_heap, no_gc_while_importing
from studio.ui.widgets.qt_column_mapping import QtColumnMapping
from studio.ui.widgets.qt_data_errors import QtDataErrorsPanel
from studio.ui.widgets.qt_token_histogram import QtTokenHistogram
from studio.ui.widgets.qt_token_view import MASKED_COLOURS, MASKED_TEXT, TRAINED_COLOURS, TRAINED_TEXT, QtTokenView

RED = "#b3261e"
TEXT_SPLIT_LABELS = {"blank_lines": "a document per block (split at blank lines)",
                     "file": "one document per file"}


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QtRowsModel(QAbstractTableModel):
    """Read-only table of normalised examples (SFT's, or a preference method's columns); rows are fetched from
    Arrow in blocks as they scroll into view."""

    HEADERS = table_headers("sft")
    _BLOCK = 200

    def __init__(self, parent=None):
        super().__init__(parent)
        self._data: LoadedData | None = None
        self._blocks: OrderedDict[int, list[tuple[Any, ...]]] = OrderedDict()

    def set_data(self, data: LoadedData | None, method: str = "sft") -> None:
        self.beginResetModel()
        self._data = data
        self._blocks.clear()
        self.HEADERS = table_headers(method, data.unit if data is not None else "line")
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if self._data is None or parent.isValid() else len(self._data.examples)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt API
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def _row(self, row: int) -> tuple[Any, ...]:
        block = row // self._BLOCK
        rows = self._blocks.get(block)
        if rows is None:
            start = block * self._BLOCK
            examples = self._data.examples[start:start + self._BLOCK]
            lines = self._data.lines[start:start + self._BLOCK]
            rows = []
            for line, example in zip(lines, examples):
                rows.append((line, *example_cells(example)))
            self._blocks[block] = rows
            if len(self._blocks) > 50:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(block)
        return rows[row - block * self._BLOCK]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if self._data is None or not index.isValid():
            return None
        cell = self._row(index.row())[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _one_line(cell) if isinstance(cell, str) else cell
        if role == Qt.ItemDataRole.ToolTipRole and isinstance(cell, str):
            return _one_line(cell, 1500)
        if role == Qt.ItemDataRole.TextAlignmentRole and not isinstance(cell, str):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class QtEvalSplitPanel(QWidget):
    """No evaluation, a seeded fraction of the training rows, or a separate file. Signals `changed()`."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.none_radio = QRadioButton("No evaluation")
        self.fraction_radio = QRadioButton("Hold out a fraction of the training rows")
        self.file_radio = QRadioButton("Evaluate on a separate file")
        self.group = QButtonGroup(self)
        for button in (self.none_radio, self.fraction_radio, self.file_radio):
            self.group.addButton(button)
        self.fraction_spin = QDoubleSpinBox()
        meta = config_field("data", "eval_fraction").metadata
        # Not down to the field's 0: "No evaluation" is its own choice above.
        self.fraction_spin.setRange(meta["step"], field_bounds("data", "eval_fraction")[1])
        self.fraction_spin.setSingleStep(meta["step"])
        self.fraction_spin.setDecimals(meta["decimals"])
        self.fraction_spin.setValue(0.1)
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
        self.group.buttonToggled.connect(self._on_toggled)
        self.fraction_spin.valueChanged.connect(self._emit)
        self.file_edit.editingFinished.connect(self._emit)
        self._rows = 0
        self._seed = 42
        self._training = TrainingSettings()  # the schedule (Config tab, Advanced) decides too: one sentence for both
        self._update_enabled()

    def set_values(self, eval_fraction: float, eval_file: str, *, rows: int, seed: int,
                   training: TrainingSettings | None = None, eval_auto: bool = False) -> None:
        self._rows, self._seed = rows, seed
        # data.eval_auto's split is shown as the fraction a run will hold out; any edit makes it explicit.
        eval_fraction = eval_fraction or auto_eval_fraction(DataSettings(eval_auto=eval_auto, eval_file=eval_file),
                                                            rows)
        if training is not None:
            self._training = training
        for widget in (self.group, self.fraction_spin, self.file_edit):
            widget.blockSignals(True)
        if eval_file:
            self.file_radio.setChecked(True)
            self.file_edit.setText(eval_file)
        elif eval_fraction > 0:
            self.fraction_radio.setChecked(True)
            self.fraction_spin.setValue(eval_fraction)
        else:
            self.none_radio.setChecked(True)
        for widget in (self.group, self.fraction_spin, self.file_edit):
            widget.blockSignals(False)
        self._update_enabled()

    def values(self) -> tuple[float, str]:
        """(eval_fraction, eval_file) as chosen."""
        if self.fraction_radio.isChecked():
            return round(self.fraction_spin.value(), 4), ""
        if self.file_radio.isChecked():
            return 0.0, self.file_edit.text().strip()
        return 0.0, ""

    def _on_toggled(self, *_args) -> None:
        self._update_enabled()
        self._emit()

    def _emit(self) -> None:
        self._update_enabled()
        self.changed.emit()

    def _update_enabled(self) -> None:
        self.fraction_spin.setEnabled(self.fraction_radio.isChecked())
        self.file_edit.setEnabled(self.file_radio.isChecked())
        self.browse_button.setEnabled(self.file_radio.isChecked())
        fraction, eval_file = self.values()
        # The automatic split is shown as its fraction (set_values): "No evaluation" here is what it says.
        when = html.escape(describe_evaluation(DataSettings(eval_fraction=fraction, eval_file=eval_file,
                                                            eval_auto=False), self._training))
        if fraction and self._rows:
            held = max(1, round(self._rows * fraction))
            self.counts_label.setText(f"{self._rows - held:,} rows train, {held:,} rows evaluate "
                                      f"(drawn with seed {self._seed}). {when}")
        elif eval_file:
            exists = Path(eval_file).exists()
            self.counts_label.setText(f"All {self._rows:,} rows train; the eval file is read the same way. {when}"
                                      if exists else f"<span style='color:{RED}'>{html.escape(eval_file)}: "
                                                     "no such file</span>")
        else:
            self.counts_label.setText(when)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose an eval file", "", FILE_DIALOG_FILTER)
        if path:
            self.file_edit.setText(path)
            self._emit()

class QtDatasetTab(QWidget):
    """Signals `dataset_chosen(Path)` when a source with at least one usable example has been read,
    `settings_changed()` after the user edits a data setting, `loaded(LoadedData)` when a read ends and
    `load_failed(str)` when a source cannot be read.

    It shows a `DatasetSession` (its own, or the window's, whose draft the Config tab edits too) and re-renders
    when another part of the window changes the draft."""

    dataset_chosen = Signal(Path)
    settings_changed = Signal()
    loaded = Signal(object)
    load_failed = Signal(str)
    stats_ready = Signal(object)
    preview_updated = Signal()

    def __init__(self, parent=None, *, session: DatasetSession | None = None):
        super().__init__(parent)
        self.session = session if session is not None else DatasetSession()
        self.preview = None
        # One runner per job: a new read cancels the old read, never the tokenizer or the measurement.
        self._reads = TaskRunner(self)
        self._tokenizers = TaskRunner(self)
        self._measures = TaskRunner(self)
        self._reading: object | None = None  # the read in progress (its token), None when none is
        self._tokenizer_loading = ""  # the model whose tokenizer is being loaded
        self._shown_max_length = self.session.max_length
        self._shown_responses_only = self.session.settings.train_on_responses_only

        # --- the source bar -----------------------------------------------------------------------
        self.open_button = QPushButton("Open file…")
        self.open_button.setToolTip("JSON, JSONL, CSV, TSV, Parquet, or plain text (.txt, .md)")
        self.open_button.clicked.connect(self._browse)
        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("A folder saved with datasets' save_to_disk, or a folder of data files")
        self.folder_button.clicked.connect(self._browse_folder)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("or type a path or a Hugging Face Hub dataset id and press Enter")
        self.source_edit.returnPressed.connect(lambda: self.open_path(self.source_edit.text().strip()))
        self.split_label = QLabel("split")
        self.split_edit = QLineEdit()
        self.split_edit.setPlaceholderText("train")
        self.split_edit.setFixedWidth(self.fontMetrics().horizontalAdvance("validation") + 24)
        self.split_edit.setToolTip("data.split: which split of a Hub dataset or a saved DatasetDict to read")
        self.split_edit.editingFinished.connect(self._on_split_name_edited)
        # Shown for plain text files only: where one training document ends.
        self.text_split_combo = QComboBox()
        for value, label in TEXT_SPLIT_LABELS.items():
            self.text_split_combo.addItem(label, value)
        self.text_split_combo.setToolTip(
            "data.text_split: how a .txt/.md file is cut into training documents — at blank lines, or not at "
            "all (the whole file is one document)")
        self.text_split_combo.currentIndexChanged.connect(self._on_text_split_chosen)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(180)
        self.progress_bar.setFormat("reading… %p%")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_loading)
        self.progress_bar.hide()
        self.cancel_button.hide()
        self.path_label = self.source_edit  # the old name, kept for callers
        self.summary_label = QLabel("No dataset open. Open a file, a saved dataset folder or a Hub dataset id.")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)

        # --- rows ----------------------------------------------------------------------------------------
        self.rows_model = QtRowsModel(self)
        self.table = QTableView()
        self.table.setModel(self.rows_model)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self._size_columns()
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_preview())

        # --- bottom panels -------------------------------------------------------------------------------
        self.histogram = QtTokenHistogram()
        self.measure_all_button = QPushButton("Measure all rows")
        self.measure_all_button.clicked.connect(lambda: self._start_stats(limit=None))
        self.measure_all_button.hide()
        stats_box = QWidget()
        stats_layout = QVBoxLayout(stats_box)
        stats_layout.addWidget(self.histogram, stretch=1)
        stats_row = QHBoxLayout()
        self.stats_status = QLabel()
        stats_row.addWidget(self.stats_status, stretch=1)
        stats_row.addWidget(self.measure_all_button)
        stats_layout.addLayout(stats_row)
        self.errors_panel = QtDataErrorsPanel()
        self.errors_panel.skip_bad_rows_changed.connect(self._on_skip_changed)
        self.errors_panel.encoding_chosen.connect(self._on_encoding_chosen)
        self.mapping_panel = QtColumnMapping()
        self.mapping_panel.mapping_applied.connect(self._on_mapping_applied)
        self.split_panel = QtEvalSplitPanel()
        self.split_panel.changed.connect(self._on_split_changed)
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(stats_box, "Token lengths")
        self.bottom_tabs.addTab(self.errors_panel, "Problems")
        self.bottom_tabs.addTab(self.mapping_panel, "Columns")
        self.bottom_tabs.addTab(self.split_panel, "Eval split")
        self.issues_list = self.errors_panel.table  # the old name, kept for callers

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.table)
        left.addWidget(self.bottom_tabs)
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 1)
        left.setSizes([330, 370])

        # --- the preview ---------------------------------------------------------------------------------
        self.preview_title = QLabel("<b>What the model sees</b>")
        self.responses_only_check = QCheckBox("Train on responses only")
        self.responses_only_check.setChecked(True)
        self.responses_only_check.setToolTip("data.train_on_responses_only: the loss is taken on the assistant's "
                                             "replies only; prompts are masked.")
        self.responses_only_check.toggled.connect(self._on_responses_only_toggled)
        legend = QLabel(
            f"<span style='background:{TRAINED_COLOURS[0]}; color:{TRAINED_TEXT}'>&nbsp;trained&nbsp;</span>"
            f"<span style='background:{TRAINED_COLOURS[1]}; color:{TRAINED_TEXT}'>&nbsp;tokens&nbsp;</span>&nbsp; "
            f"<span style='background:{MASKED_COLOURS[0]}; color:{MASKED_TEXT}'>&nbsp;masked&nbsp;</span>"
            f"<span style='background:{MASKED_COLOURS[1]}; color:{MASKED_TEXT}'>&nbsp;tokens&nbsp;</span>&nbsp; "
            "<span style='background:#fbe3e3; color:#b3261e; text-decoration:line-through'>&nbsp;cut by "
            "max_length&nbsp;</span>")
        self.preview_info = QLabel("Select a row.")
        self.preview_info.setWordWrap(True)
        self.token_view = QtTokenView()
        # A pair's rejected reply, beside the chosen one in `token_view` (methods beyond SFT).
        self.rejected_view = QtTokenView()
        self.chosen_title = QLabel()
        self.rejected_title = QLabel()
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
        self._show_sides(())

        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(preview_box)
        main.setStretchFactor(0, 1)
        main.setStretchFactor(1, 1)
        main.setSizes([580, 580])

        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.folder_button)
        top.addWidget(self.source_edit, stretch=1)
        top.addWidget(self.split_label)
        top.addWidget(self.split_edit)
        top.addWidget(self.text_split_combo)
        top.addWidget(self.progress_bar)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(main, stretch=1)

        self._tokenizer_timer = QTimer(self)
        self._tokenizer_timer.setSingleShot(True)
        self._tokenizer_timer.setInterval(400)  # the model path may be typed a key at a time
        self._tokenizer_timer.timeout.connect(self._ensure_tokenizer)
        self.token_view.show_message("Open a dataset to see its rows as the model will see them.")
        self.session.follow_model()
        unsubscribe = self.session.draft.subscribe(self._on_draft_changed)
        self.destroyed.connect(lambda *_: unsubscribe())  # the draft may outlive the widget
        self._sync_widgets()
        if self.session.needs_read(reading=False):
            self._start_load()

    def _size_columns(self) -> None:
        """Fixed widths for the line and the short columns (turns, label), the text columns share the rest: sizing
        to contents would read a thousand rows from Arrow on every layout."""
        header = self.table.horizontalHeader()
        short = {"Turns": "Turns", "Label": "undesirable"}
        for column, title in enumerate(self.rows_model.HEADERS):
            if column == 0 or title in short:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                sample = "0000000" if column == 0 else short[title]
                header.resizeSection(column, self.fontMetrics().horizontalAdvance(sample) + 20)
            else:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)

    def _show_rows(self, data: LoadedData | None) -> None:
        self.rows_model.set_data(data, self.session.data_method)
        self._size_columns()

    # --- the shared state -------------------------------------------------------------------------------
    @property
    def settings(self) -> DataSettings:
        """The data settings: the draft's, shared with the Config tab."""
        return self.session.settings

    @property
    def data(self) -> LoadedData | None:
        return self.session.data

    @property
    def stats(self) -> Any:
        return self.session.stats

    @property
    def tokenizer(self) -> Any:
        return self.session.tokenizer

    @property
    def model_name(self) -> str:
        return self.session.model_name

    @property
    def max_length(self) -> int:
        return self.session.max_length

    def set_config(self, config: RunConfig) -> None:
        """Show a config: the draft takes it, and the data is read again only if what is read changed."""
        self.session.draft.set_config(config)

    def apply_to(self, config: RunConfig) -> None:
        """Write the data settings this tab edits into a config."""
        for name in TAB_FIELDS:
            setattr(config.data, name, copy.deepcopy(getattr(self.settings, name)))

    def set_max_length(self, max_length: int) -> None:
        self.session.draft.update("training", max_length=max_length)

    def _edit(self, **values: Any) -> None:
        """Write the user's edit into the draft; `settings_changed` once it changed something."""
        if self.session.edit(source=self, **values) is not None:
            self.settings_changed.emit()

    def _on_draft_changed(self, change: Change) -> None:
        if change.source is self:
            return  # this tab's own edit: its handler has shown it
        if self.session.follow_model():
            self.histogram.clear("Token lengths appear once the model's tokenizer is loaded.")
            self._update_preview()
            if self.isVisible():
                self._tokenizer_timer.start()
        if self.max_length != self._shown_max_length:
            self._shown_max_length = self.max_length
            self.histogram.set_max_length(self.max_length)
            self._update_preview()
        responses_changed = self.settings.train_on_responses_only != self._shown_responses_only
        self._shown_responses_only = self.settings.train_on_responses_only
        self._sync_widgets()
        if self.session.forget_source():
            self._show_no_source()
        elif self.session.needs_read(reading=self.is_loading()):
            self._start_load()
        elif responses_changed:
            self._update_preview()
            self._start_stats()

    def _sync_widgets(self) -> None:
        s = self.settings
        self.responses_only_check.blockSignals(True)
        self.responses_only_check.setChecked(s.train_on_responses_only)
        self.responses_only_check.blockSignals(False)
        self.errors_panel.set_skip_bad_rows(s.skip_bad_rows)
        self.errors_panel.set_encoding(s.encoding or "utf-8")
        rows = len(self.data.examples) if self.data is not None else 0
        self.split_panel.set_values(s.eval_fraction, s.eval_file, rows=rows, seed=self.session.seed,
                                    training=self.session.training, eval_auto=s.eval_auto)
        if s.train_file and not self.source_edit.hasFocus():
            self.source_edit.setText(s.train_file)
        self.split_edit.setText(s.split if s.split != "train" else "")
        try:
            kind = resolve_source(s.train_file).kind if s.train_file else ""
        except DataError:
            kind = ""
        self.split_label.setVisible(kind in ("saved", "folder", "hub"))
        self.split_edit.setVisible(kind in ("saved", "folder", "hub"))
        self.text_split_combo.blockSignals(True)
        self.text_split_combo.setCurrentIndex(max(0, self.text_split_combo.findData(s.text_split)))
        self.text_split_combo.blockSignals(False)
        self.text_split_combo.setVisible(kind == "text")

    # --- opening -----------------------------------------------------------------------------------------
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open dataset", "", FILE_DIALOG_FILTER)
        if path:
            self.open_path(Path(path))

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a saved dataset folder")
        if folder:
            self.open_path(Path(folder))

    def open_path(self, path: Path | str) -> bool:
        """Read a file, folder or Hub id in the background; False when it cannot be opened at all.

        A different source starts with automatic detection, UTF-8, no column mapping and the train split.
        """
        spec = str(path).strip()
        if not spec:
            return False
        changed = self.session.open(spec, source=self)
        self._sync_widgets()
        started = self._start_load()
        if changed:
            self.settings_changed.emit()
        return started

    def _start_load(self) -> bool:
        spec = self.settings.train_file
        self.source_edit.setText(spec)
        self._cancel_stats()
        request = self.session.begin_read()
        self._reads.cancel()
        self._finish_loading()
        self.preview = None
        self._show_rows(None)
        self.histogram.clear("Token lengths appear once the data is read.")
        self.stats_status.setText("")
        self.measure_all_button.hide()
        try:
            resolve_source(spec)
        except DataError as error:
            self._show_failure(error)
            return False
        self.summary_label.setText(f"Reading {html.escape(spec)}…")
        self._clear_preview("Reading the data…", info="No row selected yet.")
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self.cancel_button.show()
        freeze_heap()
        token = self._reading = object()
        self._reads.start(lambda state: read_source(request, state, importing=no_gc_while_importing),
                          on_partial=self._on_head, on_progress=self._on_progress, on_result=self._on_loaded,
                          on_error=self._on_failed, on_cancelled=lambda: self._on_cancelled(token),
                          expected_errors=(DataError, ScanCancelled), name="read dataset")
        return True

    def cancel_loading(self) -> None:
        """Stop reading (the rows read so far stay on show) and stop measuring token lengths."""
        self._reads.cancel()
        self._cancel_stats()

    def is_loading(self) -> bool:
        return self._reading is not None

    def _show_no_source(self) -> None:
        """No source any more: nothing read from the last one is shown as this run's data."""
        self._cancel_stats()
        self._reads.cancel()
        self._finish_loading()
        self.preview = None
        self.source_edit.clear()
        self._show_rows(None)
        self.summary_label.setText(html.escape(self.session.no_source_text()))
        self.errors_panel.show_problems([], 0, rows=0)
        self.bottom_tabs.setTabText(1, "Problems")
        self.mapping_panel.set_state(None, self.settings.format, self.session.mapping())
        self.histogram.clear("Token lengths appear once the data is read.")
        self.stats_status.setText("")
        self._clear_preview("Open a dataset to see its rows as the model will see them.")

    def _finish_loading(self) -> None:
        self._reading = None
        self.progress_bar.hide()
        self.cancel_button.hide()

    def _on_head(self, head: LoadedData) -> None:
        self.session.data = head
        self._show_rows(head)
        self._describe(head, reading=True)
        self._select_first_row()

    def _on_progress(self, fraction: float, rows: int) -> None:
        self.progress_bar.setValue(int(fraction * 1000))
        self.progress_bar.setFormat(f"{rows:,} rows… %p%")

    def _on_loaded(self, data: LoadedData) -> None:
        self._finish_loading()
        selected = self.table.currentIndex().row()
        self.session.data = data
        self._show_rows(data)
        self._describe(data)
        empty = "" if len(data.examples) or data.issue_count else f"{data.path}: holds no records"
        self.errors_panel.show_problems(list(data.issues), data.issue_count, rows=len(data.examples), file_error=empty)
        self.bottom_tabs.setTabText(1, f"Problems ({data.issue_count:,})" if data.issue_count else "Problems")
        self.mapping_panel.set_state(data, self.settings.format, self.session.mapping())
        self._sync_widgets()
        if not data.format or not data.confident:
            self.bottom_tabs.setCurrentWidget(self.mapping_panel)
        elif data.issue_count:
            self.bottom_tabs.setCurrentWidget(self.errors_panel)
        if len(data.examples):
            self._select_row(max(0, min(selected, len(data.examples) - 1)))
        else:
            if not data.issue_count:
                self._clear_preview("This data holds no records.")
            elif not data.format:
                self._clear_preview("No row could be read: the record shape was not recognised. Choose the shape "
                                    "and the columns under Columns, then apply.")
            else:
                self._clear_preview("No row could be read; see Problems.")
            self.histogram.clear("No rows to measure.")
        self._start_stats()
        if self.session.data_method != "sft":
            self.histogram.clear(f"Token lengths are measured for SFT data; {METHOD_TITLES[self.session.data_method]}'s "
                                 "trainer tokenises each prompt and reply itself (see the preview).")
        self.loaded.emit(data)
        if len(data.examples):
            self.dataset_chosen.emit(Path(self.settings.train_file))

    def _on_failed(self, error: DataError) -> None:
        self._finish_loading()
        self._show_failure(error)

    def _on_cancelled(self, token: object) -> None:
        if token is not self._reading:
            return  # replaced by a newer read, not cancelled by the user
        self._finish_loading()
        shown = len(self.data.examples) if self.data is not None else 0
        self.summary_label.setText(f"<b style='color:{RED}'>Reading cancelled.</b> The first {shown:,} rows are "
                                   "shown; open the file again to read all of it.")
        if not shown:
            self._clear_preview("Reading was cancelled before the first rows; open the file again.")
        self.load_failed.emit("cancelled")

    def _show_failure(self, error: DataError) -> None:
        self.session.read_failed(error)
        self._show_rows(None)
        first = html.escape(str(error).splitlines()[0])
        self.summary_label.setText(f"<b style='color:{RED}'>Cannot use this data.</b> {first}")
        messages = str(error).splitlines()
        self.errors_panel.show_problems(list(error.issues), len(error.issues), rows=0, file_error=messages[0],
                                        guess=getattr(error, "encoding_guess", None),
                                        read_as=ENCODING_NAMES.get(self.settings.encoding, self.settings.encoding))
        self.bottom_tabs.setTabText(1, "Problems (!)")
        self.bottom_tabs.setCurrentWidget(self.errors_panel)
        self._clear_preview("The data cannot be read; see Problems.")
        self.histogram.clear("No rows to measure: the data cannot be read.")
        self.mapping_panel.set_state(None, self.settings.format, self.session.mapping())
        self.load_failed.emit(str(error))

    def _describe(self, data: LoadedData, *, reading: bool = False) -> None:
        rows = len(data.examples)
        if not reading and not rows and not data.issue_count:
            self.summary_label.setText(f"<b style='color:{RED}'>Cannot use this data.</b> "
                                       f"{html.escape(str(data.path))} holds no records.")
            return
        encoding = ENCODING_NAMES.get(data.encoding, data.encoding)
        parts = [f"<b>{rows:,}</b> {'rows so far' if reading else 'rows'}"]
        if data.format:
            parts.append(f"<b>{html.escape(format_name(data.format))}</b> — {html.escape(data.evidence)}")
        else:
            parts.append(f"<b style='color:{RED}'>shape not recognised</b> — map the columns")
        if not reading:
            if data.issue_count:
                verdict = "skipped when training" if self.settings.skip_bad_rows else "training refuses the data"
                parts.append(f"<b style='color:{RED}'>{data.issue_count:,} bad row(s)</b> ({verdict})")
            else:
                parts.append("no bad rows")
            if data.duplicates:
                example = (f", e.g. line {data.duplicate_pairs[0][0]} repeats line {data.duplicate_pairs[0][1]}"
                           if data.duplicate_pairs else "")
                parts.append(f"{data.duplicates:,} duplicate(s){example}")
        if encoding:
            parts.append(encoding)
        if self.session.data_method != "sft":
            parts.insert(0, f"read for <b>{METHOD_TITLES[self.session.data_method]}</b>")
        self.summary_label.setText(" · ".join(parts))

    # --- rows and the preview ------------------------------------------------------------------------------
    def _select_first_row(self) -> None:
        if self.table.currentIndex().isValid() or not self.rows_model.rowCount():
            self._update_preview()
            return
        self._select_row(0)

    def _select_row(self, row: int) -> None:
        index = self.rows_model.index(row, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self._update_preview()

    def select_row(self, row: int) -> None:
        """Show row `row` (0-based) in the preview."""
        self._select_row(row)

    def _ensure_tokenizer(self) -> None:
        name = self.model_name
        if not self.session.wants_tokenizer() or self._tokenizer_loading == name:
            return
        freeze_heap()
        trust = self.session.trust_remote_code
        self._tokenizer_loading = name
        # Any exception is the model's answer (a wrong path, an unreachable Hub id), shown in one line, not a fault.
        self._tokenizers.start(
            lambda state: load_model_tokenizer(name, trust_remote_code=trust, importing=no_gc_while_importing),
            on_result=lambda tokenizer: self._on_tokenizer_loaded(name, tokenizer),
            on_error=lambda error: self._on_tokenizer_failed(name, error),
            on_done=lambda: self._tokenizer_ended(name), expected_errors=(Exception,), name="load tokenizer")
        self._update_preview()

    def _tokenizer_ended(self, name: str) -> None:
        if self._tokenizer_loading == name:
            self._tokenizer_loading = ""

    def _on_tokenizer_loaded(self, name: str, tokenizer: Any) -> None:
        if not self.session.tokenizer_loaded(name, tokenizer):
            return
        freeze_heap()  # the tokenizer brought torch and transformers with it
        self._update_preview()
        self._start_stats()

    def _on_tokenizer_failed(self, name: str, error: BaseException) -> None:
        if not self.session.tokenizer_failed(name, error):
            return
        self._update_preview()
        self.histogram.clear(f"The tokenizer of {name} could not be loaded: {self.session.tokenizer_error}")

    def _clear_preview(self, message: str, *, info: str = "No row to show.") -> None:
        """Replace the preview of the last row shown (its tokens and counts) with `message`."""
        self.preview = None
        self.preview_info.setText(f"<span style='color:{MASKED_TEXT}'>{html.escape(info)}</span>")
        self.token_info.setText(" ")
        self._show_sides(())
        self.token_view.show_message(message)

    def _show_sides(self, sides: tuple[tuple[str, Any], ...]) -> None:
        """A method's replies after the prompt, one view each (a pair side by side); none for SFT."""
        self.chosen_title.setVisible(bool(sides))
        self.rejected_title.setVisible(len(sides) > 1)
        self.rejected_view.setVisible(len(sides) > 1)
        for (title, preview), label, view in zip(sides, (self.chosen_title, self.rejected_title),
                                                 (self.token_view, self.rejected_view)):
            colour = "#1e7b34" if title.startswith(("Chosen", "Desirable")) else (
                RED if title.startswith(("Rejected", "Undesirable")) else MASKED_TEXT)
            label.setText(f"<b style='color:{colour}'>{html.escape(title)}</b> · {preview.total_tokens:,} tokens, "
                          f"{preview.trained_tokens:,} trained")
            view.show_preview(preview)

    def _update_preview(self) -> None:
        shown = self.session.preview_row(self.table.currentIndex().row())
        if shown is None:
            return
        self.preview = shown.preview
        self._show_sides(shown.sides)
        self.responses_only_check.setVisible(self.session.data_method == "sft")  # TRL trains the replies only
        if shown.sides:
            self.preview_info.setText(shown.where)
            self.preview_updated.emit()
            return
        if shown.preview is None:
            self.preview_info.setText(shown.where)
            self.token_view.show_message(shown.message)
            if shown.waiting_for_tokenizer and self.isVisible():
                self._tokenizer_timer.start()
            return
        preview = shown.preview
        text = (f"{shown.where} · <b>{preview.total_tokens:,}</b> tokens: "
                f"<b style='color:#1e7b34'>{preview.trained_tokens:,} trained</b>, {preview.masked_tokens:,} masked")
        if preview.truncated_tokens:
            text += (f", <b style='color:{RED}'>{preview.truncated_tokens:,} cut</b> by max_length "
                     f"{self.max_length}")
        if not preview.trained_tokens:
            text += f" — <b style='color:{RED}'>nothing in this row is trained</b>"
        self.preview_info.setText(text)
        self.token_view.show_preview(preview)
        self.preview_updated.emit()

    # --- statistics ----------------------------------------------------------------------------------------
    def _start_stats(self, limit: int | None = STATS_SAMPLE_ROWS) -> None:
        self._cancel_stats()
        request = self.session.stats_request(limit)
        if request is None:
            return
        freeze_heap()
        self.measure_all_button.hide()
        self.stats_status.setText("Measuring token lengths…")
        self._measures.start(lambda state: measure_lengths(request, state, importing=no_gc_while_importing),
                             on_partial=self._on_stats, on_result=self._on_stats_done,
                             on_error=lambda error: self.stats_status.setText(
                                 f"Token lengths failed: {type(error).__name__}: {error}"),
                             name="measure token lengths")

    def _cancel_stats(self) -> None:
        self._measures.cancel()

    def _on_stats(self, stats: Any) -> None:
        self.session.stats = stats
        self.histogram.set_stats(stats)
        self.stats_status.setText(f"Measuring… {stats.measured:,} rows so far.")

    def _on_stats_done(self, stats: Any) -> None:
        if stats is None:
            return  # cancelled inside the measurement
        self.session.stats = stats
        self.histogram.set_stats(stats)
        if stats.complete:
            self.stats_status.setText(f"All {stats.total_rows:,} rows measured in {stats.seconds:.1f} s.")
        else:
            self.stats_status.setText(f"{stats.measured:,} random rows measured in {stats.seconds:.1f} s.")
            self.measure_all_button.setText(f"Measure all {stats.total_rows:,} rows")
            self.measure_all_button.show()
        self.stats_ready.emit(stats)

    # --- edits ----------------------------------------------------------------------------------------------
    def _on_responses_only_toggled(self, checked: bool) -> None:
        self._shown_responses_only = checked
        self._edit(train_on_responses_only=checked)
        self._update_preview()
        self._start_stats()

    def _on_skip_changed(self, skip: bool) -> None:
        self._edit(skip_bad_rows=skip)
        if self.data is not None and self.data.complete:
            self._describe(self.data)

    def _on_encoding_chosen(self, encoding: str) -> None:
        if encoding == self.settings.encoding:
            return
        self._edit(encoding=encoding)
        self._sync_widgets()
        self._start_load()

    def _on_mapping_applied(self, fmt: str, mapping: dict[str, str]) -> None:
        if self.session.data_method != "sft":
            fmt = "auto"  # a preference method detects its shape per record; only the columns are mapped
        self.session.apply_mapping(fmt, mapping, source=self)
        self.settings_changed.emit()
        self._start_load()

    def _on_split_name_edited(self) -> None:
        split = self.split_edit.text().strip() or "train"
        if split == self.settings.split:
            return
        self._edit(split=split)
        self._start_load()

    def _on_text_split_chosen(self) -> None:
        text_split = self.text_split_combo.currentData()
        if text_split == self.settings.text_split:
            return
        self._edit(text_split=text_split)
        self._start_load()

    def _on_split_changed(self) -> None:
        eval_fraction, eval_file = self.split_panel.values()
        # "No evaluation" chosen is an answer: the automatic split (data.eval_auto) no longer applies.
        eval_auto = self.settings.eval_auto and not self.split_panel.none_radio.isChecked()
        self._edit(eval_fraction=eval_fraction, eval_file=eval_file, eval_auto=eval_auto)

    # --- lifecycle ------------------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self.model_name and self.tokenizer is None and not self.session.tokenizer_error:
            self._tokenizer_timer.start(0)

    def shutdown(self, timeout_ms: int = 10_000) -> None:
        """Stop every background task of the tab and wait for it (before the window closes)."""
        self._tokenizer_timer.stop()
        self._finish_loading()
        for runner in (self._reads, self._measures, self._tokenizers):
            runner.shutdown(timeout_ms)
