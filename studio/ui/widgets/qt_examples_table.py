"""A read-only table of a dataset's examples, fetched from Arrow in blocks as the rows scroll into view."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import QHeaderView, QTableView

__all__ = ["QtExamplesModel", "QtExamplesTable"]

Cells = Callable[[dict[str, Any]], tuple[Any, ...]]


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QtExamplesModel(QAbstractTableModel):
    """The examples of a LoadedData, each as its source line (or row) and the cells `cells(example)` gives under
    `HEADERS`."""

    HEADERS: tuple[str, ...] = ()
    _BLOCK = 200

    def __init__(self, parent=None):
        super().__init__(parent)
        self._data: Any = None
        self._cells: Cells = lambda example: ()
        self._blocks: OrderedDict[int, list[tuple[Any, ...]]] = OrderedDict()

    def set_data(self, data: Any, headers: tuple[str, ...], cells: Cells) -> None:
        self.beginResetModel()
        self._data, self.HEADERS, self._cells = data, tuple(headers), cells
        self._blocks.clear()
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
            rows = [(line, *self._cells(example)) for line, example in zip(lines, examples)]
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


class QtExamplesTable(QTableView):
    """One row per example, one selected at a time; signals `row_selected(row)` (0-based) when the user picks
    one. Short columns (the line, the turns, a label) keep a fixed width, the text columns share the rest."""

    row_selected = Signal(int)
    SHORT_COLUMNS = {"Turns": "Turns", "Label": "undesirable"}
    """Title → the widest text such a column shows."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.examples = QtExamplesModel(self)
        self.setModel(self.examples)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.selectionModel().currentRowChanged.connect(lambda current, _: self.row_selected.emit(current.row()))

    def show_examples(self, data: Any, headers: tuple[str, ...], cells: Cells) -> None:
        self.examples.set_data(data, headers, cells)
        self._size_columns()

    def select(self, row: int) -> None:
        """Make `row` the current row (nothing when there is no such row or it already is)."""
        if row < self.examples.rowCount() and self.currentIndex().row() != row:
            self.selectionModel().setCurrentIndex(
                self.examples.index(row, 0),
                QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)

    def _size_columns(self) -> None:
        """Fixed widths for the short columns: sizing to contents would read a thousand rows from Arrow on every
        layout."""
        header = self.horizontalHeader()
        for column, title in enumerate(self.examples.HEADERS):
            if column == 0 or title in self.SHORT_COLUMNS:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                sample = "0000000" if column == 0 else self.SHORT_COLUMNS[title]
                header.resizeSection(column, self.fontMetrics().horizontalAdvance(sample) + 20)
            else:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
