"""The Dataset tab's Grow panel: shows a `GrowSession` (studio.core.sessions.grow) and writes every edit into it.

Detected slots in a table whose Shape cell is edited in place (a kind, a mask like 05#########, or empty to leave
an argument alone); variants per original; a preview of the generated rows before anything is written; Write; the
written rows listed apart (originals, generated with their difference) with Drop row / Drop variant; paraphrase with
a local server or model folder in the background, with progress, an ETA and Cancel.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem,
    QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget,
)
from superqt.utils import signals_blocked

from studio.core.chat.paraphrase import ParaphraseError
from studio.core.data.issues import DataError
from studio.core.sessions.grow import PARAPHRASE, PREVIEW, SLOTS, WRITTEN, GrowSession
from studio.ui.background import TaskRunner

SLOT_HEADERS = ("Argument", "Kind", "Shape", "Example", "Found in")


class QtGrowPanel(QWidget):
    def __init__(self, session: GrowSession, parent=None):
        super().__init__(parent)
        self.session = session
        self.paraphrases = TaskRunner(self)
        self.take_button = QPushButton("Find slots in this data")
        self.take_button.setToolTip("The values the user says that a tool call carries (phones, ids, dates, "
                                    "amounts, names); the held-out originals are drawn first and never grown")
        self.take_button.clicked.connect(self.session.take)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.slots_table = QTableWidget(0, len(SLOT_HEADERS))
        self.slots_table.setHorizontalHeaderLabels(SLOT_HEADERS)
        self.slots_table.horizontalHeader().setStretchLastSection(True)
        self.slots_table.itemChanged.connect(self._slot_edited)
        self.variants_spin = QSpinBox()
        self.variants_spin.setRange(0, 100)
        self.variants_spin.setPrefix("variants per conversation: ")
        self.variants_spin.valueChanged.connect(lambda value: self.session.set_variants(value))
        self.write_button = QPushButton("Write grown data")
        self.write_button.setToolTip("Saves the recipe beside the data, writes NAME.grown.jsonl (training) and "
                                     "NAME.held-out.jsonl (evaluation) and trains on them")
        self.write_button.clicked.connect(self.write)
        self.preview_list = QTreeWidget()
        self.preview_list.setHeaderLabels(("Row", "Difference"))
        self.drop_row_button = QPushButton("Drop row")
        self.drop_row_button.clicked.connect(self.drop_selected_row)
        self.drop_variant_button = QPushButton("Drop this variant everywhere")
        self.drop_variant_button.clicked.connect(self.drop_selected_variant)

        self.writer_edit = QLineEdit()
        self.writer_edit.setPlaceholderText("a server on this machine (http://127.0.0.1:8080) or a model folder; "
                                            "empty: the run's base model")
        self.paraphrase_button = QPushButton("Paraphrase requests")
        self.paraphrase_button.clicked.connect(self.start_paraphrase)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.paraphrases.cancel)
        self.progress_bar = QProgressBar()
        self.eta_label = QLabel()

        top = QHBoxLayout()
        top.addWidget(self.take_button)
        top.addWidget(self.variants_spin)
        top.addStretch(1)
        top.addWidget(self.write_button)
        rows = QHBoxLayout()
        rows.addStretch(1)
        rows.addWidget(self.drop_row_button)
        rows.addWidget(self.drop_variant_button)
        model = QHBoxLayout()
        model.addWidget(self.writer_edit, stretch=1)
        model.addWidget(self.paraphrase_button)
        model.addWidget(self.progress_bar)
        model.addWidget(self.eta_label)
        model.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status_label)
        layout.addWidget(self.slots_table, stretch=1)
        layout.addWidget(self.preview_list, stretch=2)
        layout.addLayout(rows)
        layout.addLayout(model)
        unsubscribe = self.session.subscribe(self._on_session_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self._on_session_changed(frozenset({SLOTS, PREVIEW, WRITTEN, PARAPHRASE}))

    # --- the session → the widgets ---------------------------------------------------------------------------
    def _on_session_changed(self, aspects: frozenset) -> None:
        if aspects & {SLOTS}:
            self._render_slots()
        if aspects & {PREVIEW, WRITTEN}:
            self._render_rows()
        self._render_status()

    def _render_slots(self) -> None:
        rows = self.session.slot_rows()
        with signals_blocked(self.slots_table):
            self.slots_table.setRowCount(len(rows))
            for index, row in enumerate(rows):
                cells = (row.key, row.kind or "not varied", row.shape if row.used else "",
                         row.example, f"{row.count} conversation(s)" if row.used else "")
                for column, text in enumerate(cells):
                    item = QTableWidgetItem(text)
                    if column != 2:
                        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    self.slots_table.setItem(index, column, item)
        with signals_blocked(self.variants_spin):
            self.variants_spin.setValue(self.session.recipe.variants if self.session.recipe else 4)

    def _render_rows(self) -> None:
        self.preview_list.clear()
        if self.session.outputs is None:
            title = "Preview (nothing written yet)"
            groups = [(title, self.session.preview(50))]
        else:
            originals, generated = self.session.rows_apart()
            groups = [(f"Originals ({len(originals)})", originals), (f"Generated ({len(generated)})", generated)]
        for title, shown in groups:
            group = QTreeWidgetItem([title, ""])
            for row in shown:
                item = QTreeWidgetItem([row.question, row.difference])
                item.setData(0, Qt.ItemDataRole.UserRole, row.id)
                group.addChild(item)
            self.preview_list.addTopLevelItem(group)
            group.setExpanded(True)
        self.preview_list.resizeColumnToContents(0)

    def _render_status(self) -> None:
        session = self.session
        busy = session.paraphrasing
        lines = [session.error] if session.error else []
        if session.grown is not None:
            lines.append(f"{len(session.grown.train)} training rows "
                         f"({sum(r.generated for r in session.grown.train)} generated), "
                         f"{len(session.grown.held_out)} held-out originals kept apart")
        if session.problems:
            lines.append("Not varied: " + "; ".join(session.problems[:3]) +
                         (f" … and {len(session.problems) - 3} more" if len(session.problems) > 3 else ""))
        if session.outputs is not None:
            lines.append(f"Written: {session.outputs.train.name} (training), {session.outputs.held_out.name} "
                         "(evaluation)")
        if session.paraphrase_summary():
            lines.append("Paraphrase: " + session.paraphrase_summary())
        self.status_label.setText("\n".join(lines))
        ready = session.grown is not None
        self.write_button.setEnabled(ready and not busy)
        self.variants_spin.setEnabled(ready)
        self.paraphrase_button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy)
        self.drop_row_button.setEnabled(session.outputs is not None)
        self.drop_variant_button.setEnabled(session.outputs is not None)

    # --- the widgets → the session ---------------------------------------------------------------------------
    def _slot_edited(self, item: QTableWidgetItem) -> None:
        key = self.slots_table.item(item.row(), 0).text()
        try:
            self.session.set_slot(key, item.text().strip())
        except ValueError as error:
            self.session.error = str(error)
            self._render_slots()
            self._render_status()

    def write(self) -> None:
        try:
            self.session.write()
        except DataError as error:
            self.session.error = str(error)
            self._render_status()

    def _selected_id(self) -> str:
        item = self.preview_list.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) or "" if item is not None else ""

    def drop_selected_row(self) -> None:
        if row_id := self._selected_id():
            self.session.drop(row_id)

    def drop_selected_variant(self) -> None:
        if row_id := self._selected_id():
            self.session.drop(row_id.rsplit(":", 1)[1])

    def start_paraphrase(self) -> None:
        try:
            writer = self.session.writer(self.writer_edit.text())
        except ParaphraseError as error:
            self.session.error = str(error)
            self._render_status()
            return
        job = self.session.paraphrase_task(writer)
        self.progress_bar.setValue(0)
        self.paraphrases.start(job, on_result=self.session.paraphrase_done, on_progress=self._progressed,
                                on_error=self._failed, on_cancelled=self.session.paraphrase_stopped,
                                expected_errors=(ParaphraseError,), name="paraphrase")

    def _progressed(self, done: int, total: int, eta: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.eta_label.setText(eta)

    def _failed(self, error: BaseException) -> None:
        self.session.paraphrase_stopped(str(error))
