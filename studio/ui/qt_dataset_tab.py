"""Dataset tab: open a JSON/JSONL file, see its detected format, its rows and every bad line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog, QHBoxLayout, QHeaderView, QLabel, QListWidget, QPushButton, QSplitter, QTableView, QVBoxLayout,
    QWidget,
)

from studio.core.dataset import DataError, LoadedData, load_data


def _summary(example: dict[str, Any]) -> tuple[str, str, int]:
    """First user text, first assistant text and the number of turns of a normalised example."""
    if "text" in example:
        return example["text"], "", 1
    messages = example["messages"]
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    assistant = next((m["content"] for m in messages if m["role"] == "assistant"), "")
    return user, assistant, len(messages)


class QtRowsModel(QAbstractTableModel):
    """Read-only table of normalised examples."""

    HEADERS = ("Line", "Turns", "Prompt", "Response")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._data: LoadedData | None = None

    def set_data(self, data: LoadedData | None) -> None:
        self.beginResetModel()
        self._data = data
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if self._data is None or parent.isValid() else len(self._data.examples)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt API
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if self._data is None or not index.isValid():
            return None
        example = self._data.examples[index.row()]
        user, assistant, turns = _summary(example)
        if role == Qt.ItemDataRole.DisplayRole:
            return (self._data.lines[index.row()], turns, _one_line(user), _one_line(assistant))[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole and index.column() >= 2:
            return (user, assistant)[index.column() - 2]
        return None


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QtDatasetTab(QWidget):
    """Signals `dataset_chosen(Path)` when a readable file with at least one example is opened."""

    dataset_chosen = Signal(Path)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: LoadedData | None = None

        self.open_button = QPushButton("Open dataset…")
        self.open_button.clicked.connect(self._browse)
        self.path_label = QLabel("No dataset open. Open a .jsonl or .json file of conversations.")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)

        self.rows_model = QtRowsModel(self)
        self.table = QTableView()
        self.table.setModel(self.rows_model)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)

        self.issues_label = QLabel("Problems")
        self.issues_list = QListWidget()
        issues_box = QWidget()
        issues_layout = QVBoxLayout(issues_box)
        issues_layout.setContentsMargins(0, 0, 0, 0)
        issues_layout.addWidget(self.issues_label)
        issues_layout.addWidget(self.issues_list)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(issues_box)
        splitter.setSizes([400, 120])

        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.path_label, stretch=1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addWidget(splitter, stretch=1)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open dataset", "", "Datasets (*.jsonl *.json *.ndjson)")
        if path:
            self.open_path(Path(path))

    def open_path(self, path: Path) -> bool:
        """Show a file's rows and problems; returns whether it has examples to train on."""
        path = Path(path)
        self.issues_list.clear()
        try:
            data = load_data(path)
        except DataError as error:  # the whole file is unreadable: say why, keep the window as it was
            self.data = None
            self.rows_model.set_data(None)
            self.path_label.setText(str(path))
            self.summary_label.setText(f"<b style='color:#b00020'>Cannot use this file.</b> {error}")
            self.issues_list.addItems(str(error).splitlines()[1:] or [str(error)])
            return False
        self.data = data
        self.rows_model.set_data(data)
        self.path_label.setText(str(path))
        bad = len(data.issues)
        self.summary_label.setText(
            f"<b>{len(data.examples)}</b> examples · format <b>{data.format or 'unknown'}</b>"
            + (f" — {data.evidence}" if data.evidence else "")
            + (f" · <b style='color:#b00020'>{bad} bad row(s)</b>: training refuses the file until they are fixed"
               if bad else " · no problems found")
        )
        self.issues_label.setText(f"Problems ({bad})")
        self.issues_list.addItems([str(issue) for issue in data.issues] or ["No problems found."])
        if data.examples:
            self.dataset_chosen.emit(path)
        return bool(data.examples) and not bad
