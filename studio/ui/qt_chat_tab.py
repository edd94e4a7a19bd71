"""Chat tab: load a base model with an adapter and talk to it, the reply streamed token by token."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QCheckBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
    QTextBrowser, QVBoxLayout, QWidget,
)

from studio.ui.qt_workers import QtChatWorker, QtFunctionWorker


class QtChatTab(QWidget):
    """Signals `piece_received(str)` as a reply streams in, `reply_finished(str)` when it is complete."""

    reply_finished = Signal(str)
    piece_received = Signal(str)
    model_loaded = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.chat_model = None
        self.history: list[dict[str, str]] = []
        self._loader: QtFunctionWorker | None = None
        self._generator: QtChatWorker | None = None
        self._reply_parts: list[str] = []

        self.base_edit = QLineEdit()
        self.base_edit.setPlaceholderText("base model folder or Hub id")
        self.adapter_edit = QLineEdit()
        self.adapter_edit.setPlaceholderText("adapter folder or run folder (empty = the base model alone)")
        adapter_browse = QPushButton("Browse…")
        adapter_browse.clicked.connect(self._browse_adapter)
        adapter_row = QHBoxLayout()
        adapter_row.addWidget(self.adapter_edit, stretch=1)
        adapter_row.addWidget(adapter_browse)
        self.load_4bit = QCheckBox("Load in 4-bit (less memory)")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.model_status = QLabel("No model loaded.")
        self.model_status.setWordWrap(True)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 8192)
        self.max_new_tokens.setValue(256)

        setup = QGroupBox("Model")
        form = QFormLayout(setup)
        form.addRow("Base model", self.base_edit)
        form.addRow("Adapter", adapter_row)
        options = QHBoxLayout()
        options.addWidget(self.load_4bit)
        options.addWidget(QLabel("Max new tokens"))
        options.addWidget(self.max_new_tokens)
        options.addStretch(1)
        options.addWidget(self.load_button)
        form.addRow(options)
        form.addRow(self.model_status)

        self.transcript = QTextBrowser()
        self.transcript.setPlaceholderText("Load a model, then ask it something. Replies are greedy "
                                           "(deterministic), so a trained question gets its trained answer.")
        self.prompt_edit = QLineEdit()
        self.prompt_edit.setPlaceholderText("Type a message and press Enter")
        self.prompt_edit.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_generation)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, stretch=1)
        prompt_row.addWidget(self.send_button)
        prompt_row.addWidget(self.stop_button)
        prompt_row.addWidget(self.clear_button)

        layout = QVBoxLayout(self)
        layout.addWidget(setup)
        layout.addWidget(self.transcript, stretch=1)
        layout.addLayout(prompt_row)
        self._set_generating(False)

    def set_model(self, base: str, adapter: Path | None = None) -> None:
        """Prefill the fields (e.g. with the run that just finished)."""
        self.base_edit.setText(base)
        self.adapter_edit.setText(str(adapter) if adapter else "")

    def _browse_adapter(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an adapter or run folder")
        if folder:
            self.adapter_edit.setText(folder)

    def load_model(self) -> None:
        from studio.core.chat import ChatModel, ModelLoadError

        base = self.base_edit.text().strip()
        adapter = self.adapter_edit.text().strip()
        if not base and not adapter:
            self.model_status.setText("Name a base model or an adapter first.")
            return
        self.chat_model = None
        self.load_button.setEnabled(False)
        self.model_status.setText("Loading…")
        worker = QtFunctionWorker(ChatModel.load, base or adapter, [adapter] if base and adapter else [],
                                  load_in_4bit=self.load_4bit.isChecked(), expected_errors=(ModelLoadError,),
                                  parent=self)
        worker.succeeded.connect(self._on_loaded)
        worker.failed.connect(lambda message: self.model_status.setText(f"Could not load: {message}"))
        worker.finished.connect(lambda: self.load_button.setEnabled(True))
        self._loader = worker
        worker.start()

    def _on_loaded(self, chat_model) -> None:
        self.chat_model = chat_model
        adapters = f" with adapter {self.adapter_edit.text().strip()}" if chat_model.adapters else ""
        self.model_status.setText(f"Loaded {chat_model.base_name}{adapters}.")
        self._set_generating(False)
        self.model_loaded.emit()

    def send(self, text: str | None = None) -> None:
        text = (text if isinstance(text, str) else self.prompt_edit.text()).strip()
        if not text or self.chat_model is None or self._generator is not None:
            return
        self.prompt_edit.clear()
        self.history.append({"role": "user", "content": text})
        self._append_html(f"<p><b>You:</b> {html.escape(text)}</p><p><b>Model:</b> ")
        self._reply_parts = []
        worker = QtChatWorker(self.chat_model, list(self.history), max_new_tokens=self.max_new_tokens.value(),
                              parent=self)
        worker.piece.connect(self._on_piece)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_worker_finished)
        self._generator = worker
        self._set_generating(True)
        worker.start()

    def _on_piece(self, piece: str) -> None:
        self._reply_parts.append(piece)
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(piece)
        self.transcript.ensureCursorVisible()
        self.piece_received.emit(piece)

    def _on_done(self, reply: str) -> None:
        self.history.append({"role": "assistant", "content": reply})
        self._append_html("</p>")
        self.reply_finished.emit(reply)

    def _on_failed(self, message: str) -> None:
        self.history.pop()
        self._append_html(f"<p style='color:#b00020'>Generation failed: {html.escape(message)}</p>")

    def _on_worker_finished(self) -> None:
        self._generator = None
        self._set_generating(False)

    def stop_generation(self) -> None:
        if self._generator is not None:
            self._generator.stop_event.set()

    def clear(self) -> None:
        self.stop_generation()
        self.history.clear()
        self.transcript.clear()

    def _append_html(self, fragment: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertHtml(fragment)

    def _set_generating(self, generating: bool) -> None:
        ready = self.chat_model is not None
        self.send_button.setEnabled(ready and not generating)
        self.prompt_edit.setEnabled(ready)
        self.stop_button.setEnabled(generating)

    def shutdown(self) -> None:
        self.stop_generation()
        for worker in (self._generator, self._loader):
            if worker is not None:
                worker.wait()
