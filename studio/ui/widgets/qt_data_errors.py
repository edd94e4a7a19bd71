"""The errors panel: every bad row as file:line: reason, the skip-bad-rows choice and encoding fixes."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QGuiApplication
from superqt.utils import signals_blocked
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFrame, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget,
)

from studio.core.data.issues import DataIssue
from studio.core.data.encoding import ENCODING_NAMES
from studio.core.data.encoding import EncodingGuess

__all__ = ["QtDataErrorsPanel", "QtIssuesModel"]

RED = "#b3261e"


class QtIssuesModel(QAbstractTableModel):
    """Issues as a table: where (line N / row N) and why; the tooltip holds the full file:line: reason."""

    HEADERS = ("Where", "Problem")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.issues: list[DataIssue] = []
        self.messages: list[str] = []

    def set_issues(self, issues: list[DataIssue], messages: list[str] = ()) -> None:
        self.beginResetModel()
        self.issues = list(issues)
        self.messages = list(messages)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.messages) + len(self.issues)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 2

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt API
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = index.row()
        if row < len(self.messages):  # a whole-file problem
            if role == Qt.ItemDataRole.DisplayRole:
                return ("file", self.messages[row])[index.column()]
            if role == Qt.ItemDataRole.ToolTipRole:
                return self.messages[row]
            return None
        issue = self.issues[row - len(self.messages)]
        if role == Qt.ItemDataRole.DisplayRole:
            return (f"{issue.unit} {issue.line}", issue.reason)[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return str(issue)
        return None

    def text(self) -> str:
        return "\n".join([*self.messages, *(str(issue) for issue in self.issues)])


class QtDataErrorsPanel(QWidget):
    """Signals `skip_bad_rows_changed(bool)` and `encoding_chosen(str)` (a codec name)."""

    skip_bad_rows_changed = Signal(bool)
    encoding_chosen = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary_label = QLabel("No problems found.")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)

        self.encoding_banner = QFrame()
        self.encoding_banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.encoding_banner.setStyleSheet("QFrame { background: #fff4e5; border: 1px solid #f0c36d; border-radius: 4px; }"
                                           " QLabel { border: none; }")
        self.encoding_label = QLabel()
        self.encoding_label.setWordWrap(True)
        self.encoding_button = QPushButton()
        self.encoding_button.clicked.connect(self._use_guess)
        banner_layout = QHBoxLayout(self.encoding_banner)
        banner_layout.addWidget(self.encoding_label, stretch=1)
        banner_layout.addWidget(self.encoding_button)
        self.encoding_banner.hide()
        self._guess: EncodingGuess | None = None

        self.skip_check = QCheckBox("Skip bad rows when training")
        self.skip_check.setToolTip("data.skip_bad_rows: train on the good rows; each skipped row is listed in the "
                                   "run's log. Off: training refuses the data until every row is fixed.")
        self.skip_check.toggled.connect(self._refresh_summary)
        self.skip_check.toggled.connect(self.skip_bad_rows_changed)
        self.encoding_combo = QComboBox()
        for codec, name in ENCODING_NAMES.items():
            self.encoding_combo.addItem(name, codec)
        self.encoding_combo.setToolTip("data.encoding: how the bytes of JSON/JSONL/CSV files are read as text.")
        self.encoding_combo.activated.connect(
            lambda index: self.encoding_chosen.emit(self.encoding_combo.itemData(index)))
        self.copy_button = QPushButton("Copy list")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.model.text()))

        self.model = QtIssuesModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 90)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)

        controls = QHBoxLayout()
        controls.addWidget(self.skip_check)
        controls.addStretch(1)
        controls.addWidget(QLabel("Encoding"))
        controls.addWidget(self.encoding_combo)
        controls.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.encoding_banner)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(controls)

    def set_skip_bad_rows(self, skip: bool) -> None:
        with signals_blocked(self.skip_check):
            self.skip_check.setChecked(skip)
        self._refresh_summary()

    def set_encoding(self, codec: str) -> None:
        index = self.encoding_combo.findData(codec)
        if index < 0:
            self.encoding_combo.addItem(codec, codec)
            index = self.encoding_combo.count() - 1
        self.encoding_combo.setCurrentIndex(index)

    def show_problems(self, issues: list[DataIssue], total: int, *, rows: int, file_error: str = "",
                      guess: EncodingGuess | None = None, read_as: str = "UTF-8") -> None:
        """List the bad rows (and a whole-file error, with an encoding suggestion when there is one).

        A file error that is one of the located issues (a byte that is not UTF-8 on line 2) is listed once,
        at its line.
        """
        self._issues_total = total
        self._rows = rows
        self._file_error = file_error
        located = any(str(issue).startswith(file_error) for issue in issues)
        self.model.set_issues(issues, [file_error] if file_error and not located else [])
        self._guess = guess
        if guess is not None:
            self.encoding_label.setText(f"This file is not {read_as} text; {guess.describe()}.")
            self.encoding_button.setText(f"Read as {guess.name}")
            self.encoding_banner.show()
        else:
            self.encoding_banner.hide()
        self._refresh_summary()

    def _refresh_summary(self, *_args) -> None:
        total = getattr(self, "_issues_total", 0)
        if getattr(self, "_file_error", ""):
            self.summary_label.setText(f"<b style='color:{RED}'>This data cannot be used.</b> Fix the problem "
                                       "below, or choose how to read it.")
        elif not total:
            self.summary_label.setText("No problems found: every row can be trained on.")
        elif self.skip_check.isChecked():
            self.summary_label.setText(f"<b style='color:{RED}'>{total:,} bad row(s).</b> Training will skip them "
                                       f"and use the {self._rows:,} good row(s); each skipped row is listed in the "
                                       "run's log.")
        else:
            self.summary_label.setText(f"<b style='color:{RED}'>{total:,} bad row(s).</b> Training refuses this data "
                                       "until they are fixed — or tick <i>Skip bad rows when training</i>.")

    def _use_guess(self) -> None:
        if self._guess is not None:
            self.encoding_chosen.emit(self._guess.encoding)
