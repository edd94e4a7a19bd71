"""Chat tab: talk to a base model with one or more adapters, compare it with the base, export it.

The tab binds widgets to a `studio.core.sessions.chat.ChatSession`, which holds the model, the conversation
and compare mode; loading, adding an adapter and generating run on `TaskRunner`s, and replies stream in piece
by piece. Compare mode answers each prompt twice on the same loaded weights — the tuned adapter, then the base
with the adapter disabled — side by side.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
    QHBoxLayout, QLabel, QLineEdit, QMenu, QMessageBox, QPlainTextEdit, QPushButton, QRadioButton,
    QSpinBox, QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)
from superqt.utils import signals_blocked

from studio.core.chat.model import GenerationSettings, ReplyStats
from studio.core.sessions.chat import (
    ADD_ADAPTER_ERRORS, AS_TRAINED, BASE, CONVERSATION_ERRORS, LOAD_ERRORS, NF4, ORIGINAL, STOPPED_NOTE, TUNED,
    ChatSession, LoadRequest, detected_gpu, fields_after, generate_replies, run_adapter, saved_generation,
)
from studio.core.sessions.runs import RunsChange, RunsSession
from studio.ui.background import BackgroundTask, TaskRunner, describe_error

_PLACEHOLDER_FLAGS = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
_ROLE_STYLE = {"user": ("You", "#1f4e9c"), "assistant": ("Model", "#1b7f3b"), "error": ("Error", "#b00020"),
               "note": ("Note", "#8a6d00")}


class QtTranscript(QTextBrowser):
    """A conversation view: one paragraph per message, the reply streamed into the last one."""

    def __init__(self, title: str = "", parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.title = title
        self._placeholder = ""

    # Qt draws a text edit's placeholder on one line, cut off at the edge; this one wraps.
    def setPlaceholderText(self, text: str) -> None:  # noqa: N802 - Qt API
        self._placeholder = text
        self.viewport().update()

    def placeholderText(self) -> str:  # noqa: N802 - Qt API
        return self._placeholder

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().paintEvent(event)
        if self._placeholder and self.document().isEmpty():
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            margin = int(self.document().documentMargin())
            painter.drawText(self.viewport().rect().adjusted(margin, margin, -margin, -margin), _PLACEHOLDER_FLAGS,
                             self._placeholder)
            painter.end()

    def add_message(self, role: str, text: str = "", *, answered_by: str = "") -> None:
        """A paragraph "Role: text"; a reply's role names what answered it ("Model (demo-2): …")."""
        label, colour = _ROLE_STYLE[role]
        if answered_by:
            label = f"{label} ({answered_by})"
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        block = QTextBlockFormat()
        block.setTopMargin(8 if self.document().characterCount() > 1 else 0)
        if self.document().characterCount() > 1:
            cursor.insertBlock(block)
        else:
            cursor.setBlockFormat(block)
        head = QTextCharFormat()
        head.setFontWeight(QFont.Weight.Bold)
        head.setForeground(QColor(colour))
        cursor.insertText(f"{label}: ", head)
        cursor.insertText(text, self._body_format(role))
        self.ensureCursorVisible()

    def append_piece(self, piece: str) -> None:
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(piece, self._body_format("assistant"))
        self.setTextCursor(cursor)
        self.ensureCursorVisible()

    def show_messages(self, messages: list[dict[str, str]], labels: Callable[[int], str] = lambda index: "") -> None:
        """The messages (the system prompt left out); `labels(index)` names what answered a reply."""
        self.clear()
        for index, message in enumerate(messages):
            if message["role"] != "system":
                self.add_message(message["role"], message["content"], answered_by=labels(index))

    @staticmethod
    def _body_format(role: str) -> QTextCharFormat:
        body = QTextCharFormat()
        body.setFontWeight(QFont.Weight.Normal)
        body.setForeground(QColor("#b00020" if role == "error" else "#202020"))
        return body


class QtChatTab(QWidget):
    """Signals: `piece_received(str)` as the (tuned) reply streams in, `reply_finished(str)` when it is
    complete, `base_reply_finished(str)` for the base side in compare mode, `generation_finished()` when
    every reply of a prompt is done (or stopped), `model_loaded()`, `model_unloaded()`, `export_requested(source)`
    (Export model…: the window opens the dialog)."""

    reply_finished = Signal(str)
    base_reply_finished = Signal(str)
    piece_received = Signal(str)
    generation_finished = Signal()
    model_loaded = Signal()
    model_unloaded = Signal()
    export_requested = Signal(object)  # the run or adapter folder to export (None: none chosen)

    def __init__(self, parent=None, *, runs: RunsSession | None = None):
        super().__init__(parent)
        self.session = ChatSession()
        self.runs = runs if runs is not None else RunsSession()
        self.last_memory_warning: str | None = None
        # Hooks the window (and tests) may replace: the GPU to check before loading, and whether a
        # training run is using it now.
        self.gpu_info: Callable[[], Any] = detected_gpu
        self.training_running: Callable[[], bool] = self.runs.training_in_progress
        # Two runners, because a runner's next task cancels its last: a reply must not drop the result of an
        # adapter still loading, nor a load the reply under way. A new load does replace the old one.
        self._model_tasks = TaskRunner(self)
        self._replies = TaskRunner(self)
        self._generator: BackgroundTask | None = None  # the replies under way
        self._stop: threading.Event | None = None  # Stop: ends the reply under way, which still arrives
        self._send_after_load: str | None = None  # a message sent while the model its fields name was loading

        self._build_model_box()
        self._build_settings_box()
        self._build_conversation()
        self._update_buttons()
        # A run that ends fills the fields; a run renamed or deleted anywhere takes the adapter field along.
        unsubscribe = self.runs.subscribe(self._on_runs_changed)
        self.destroyed.connect(lambda *_: unsubscribe())

    # What the tests and the window read, from the session.
    @property
    def chat_model(self):
        return self.session.model

    @property
    def history(self) -> list[dict[str, str]]:
        """The tuned (or only) conversation, without the system prompt."""
        return self.session.history

    @property
    def base_history(self) -> list[dict[str, str]]:
        """Compare mode: the base model's conversation."""
        return self.session.base_history

    @property
    def last_stats(self) -> dict[str, ReplyStats]:
        return self.session.last_stats

    # --- layout ---------------------------------------------------------------------------------------------
    def _build_model_box(self) -> None:
        self.base_edit = QLineEdit()
        self.base_edit.setPlaceholderText("base model folder or Hub id (empty: the adapter's own base)")
        base_browse = QPushButton("Browse…")
        base_browse.clicked.connect(self._browse_base)
        self.adapter_edit = QLineEdit()
        self.adapter_edit.setPlaceholderText("adapter folder or run folder (empty: the base model alone)")
        # A push button with a menu: like the buttons beside it, with room for the menu arrow.
        self.runs_button = QPushButton("Runs")
        self.runs_button.setToolTip("Pick the adapter of a finished run")
        self.runs_menu = QMenu(self.runs_button)
        self.runs_menu.aboutToShow.connect(self._fill_runs_menu)
        self.runs_button.setMenu(self.runs_menu)
        adapter_browse = QPushButton("Browse…")
        adapter_browse.clicked.connect(self._browse_adapter)
        self.add_adapter_button = QPushButton("Add to loaded model")
        self.add_adapter_button.setToolTip("Load this adapter beside the loaded ones, on the same base weights "
                                           "(no reload); then switch between them below")
        self.add_adapter_button.clicked.connect(self.add_adapter)

        self.precision_trained = QRadioButton("As trained")
        self.precision_trained.setToolTip("The base weights the adapter was trained on: a QLoRA run's adapter "
                                          "answers on the same 4-bit weights, as it did in training")
        self.precision_16 = QRadioButton("16-bit")
        self.precision_16.setToolTip("The original full-quality weights (float32 on a CPU, which is faster there). "
                                     "An adapter trained on a 4-bit base learned corrections for the 4-bit "
                                     "weights and may answer differently here")
        self.load_4bit = QRadioButton("4-bit NF4 (less memory)")
        self.precision_trained.setChecked(True)
        precision = QButtonGroup(self)
        precision.addButton(self.precision_trained)
        precision.addButton(self.precision_16)
        precision.addButton(self.load_4bit)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Free the model's memory")
        self.unload_button.clicked.connect(self.unload_model)
        self.active_adapter = QComboBox()
        self.active_adapter.setMinimumContentsLength(22)
        self.active_adapter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.active_adapter.setToolTip("The adapter replies use; switching does not reload the base model")
        self.active_adapter.currentTextChanged.connect(self._on_active_adapter_chosen)
        self.model_status = QLabel("No model loaded.")
        self.model_status.setWordWrap(True)
        self.model_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        box = QGroupBox("Model")
        grid = QGridLayout(box)
        grid.addWidget(QLabel("Base model"), 0, 0)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base_edit, stretch=1)
        base_row.addWidget(base_browse)
        grid.addLayout(base_row, 0, 1)
        grid.addWidget(QLabel("Adapter"), 1, 0)
        adapter_row = QHBoxLayout()
        adapter_row.addWidget(self.adapter_edit, stretch=1)
        adapter_row.addWidget(self.runs_button)
        adapter_row.addWidget(adapter_browse)
        adapter_row.addWidget(self.add_adapter_button)
        grid.addLayout(adapter_row, 1, 1)
        options = QHBoxLayout()
        options.addWidget(QLabel("Weights"))
        options.addWidget(self.precision_trained)
        options.addWidget(self.precision_16)
        options.addWidget(self.load_4bit)
        options.addSpacing(16)
        options.addWidget(QLabel("Active adapter"))
        options.addWidget(self.active_adapter)
        options.addStretch(1)
        options.addWidget(self.load_button)
        options.addWidget(self.unload_button)
        grid.addLayout(options, 2, 0, 1, 2)
        grid.addWidget(self.model_status, 3, 0, 1, 2)
        grid.setColumnStretch(1, 1)
        self.model_box = box

    def _build_settings_box(self) -> None:
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setFixedHeight(64)
        self.system_prompt.textChanged.connect(
            lambda: setattr(self.session, "system_prompt", self.system_prompt.toPlainText()))
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setSpecialValueText("0 (greedy)")
        self.temperature.setToolTip("0 picks the most likely token every time: the same prompt gives the same "
                                    "reply, and a trained question its trained answer")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 8192)
        self.max_new_tokens.setValue(256)
        self.repetition_penalty = QDoubleSpinBox()
        self.repetition_penalty.setRange(1.0, 2.0)
        self.repetition_penalty.setSingleStep(0.05)
        self.repetition_penalty.setValue(1.0)
        self.repetition_penalty.setSpecialValueText("1.0 (off)")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setValue(-1)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("With a seed, sampled replies repeat exactly")
        self.temperature.valueChanged.connect(self._update_sampling_widgets)
        self.compare_check = QCheckBox("Compare with the base model")
        self.compare_check.setToolTip("Answer each prompt twice on the same loaded weights: with the active "
                                      "adapter and with adapters disabled, side by side")
        self.compare_check.toggled.connect(self._on_compare_toggled)

        box = QGroupBox("Generation")
        form = QFormLayout(box)
        form.addRow(self.system_prompt)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Repetition penalty", self.repetition_penalty)
        form.addRow("Seed", self.seed)
        form.addRow(self.compare_check)
        box.setFixedWidth(270)
        self.settings_box = box
        self._update_sampling_widgets()

    def _build_conversation(self) -> None:
        self.transcript = QtTranscript("tuned")
        self.transcript.setPlaceholderText(self.session.prompt_placeholder())
        self.base_transcript = QtTranscript("base")
        self.tuned_title = QLabel("Tuned")
        self.base_title = QLabel("Base model (adapter disabled)")
        for title in (self.tuned_title, self.base_title):
            title.setStyleSheet("font-weight: 600; padding: 2px 0;")
        tuned_pane, base_pane = QWidget(), QWidget()
        for pane, title, view in ((tuned_pane, self.tuned_title, self.transcript),
                                  (base_pane, self.base_title, self.base_transcript)):
            column = QVBoxLayout(pane)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(2)
            column.addWidget(title)
            column.addWidget(view, stretch=1)
        self.base_pane = base_pane
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(base_pane)
        self.splitter.addWidget(tuned_pane)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        base_pane.setVisible(False)
        self.tuned_title.setVisible(False)

        self.prompt_edit = QLineEdit()
        self.prompt_edit.setPlaceholderText("Type a message and press Enter")
        self.prompt_edit.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_generation)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Answer the last message again")
        self.regenerate_button.clicked.connect(self.regenerate)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        self.turn_hint = QLabel("")  # e.g. the adapter only ever saw one-turn conversations
        self.turn_hint.setWordWrap(True)
        self.turn_hint.setStyleSheet("color: #8a5300;")
        self.turn_hint.hide()
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, stretch=1)
        for button in (self.send_button, self.stop_button, self.regenerate_button, self.clear_button):
            prompt_row.addWidget(button)

        self.stats_label = QLabel("")
        self.stats_label.setStyleSheet("color: #555;")
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Reopen a saved conversation (JSON, OpenAI messages)")
        self.open_button.clicked.connect(self._open_conversation_dialog)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save this conversation as JSON (OpenAI messages)")
        self.save_button.clicked.connect(self._save_conversation_dialog)
        self.export_button = QPushButton("Export model…")
        self.export_button.setToolTip("Export the adapter, a merged model or GGUF + Ollama Modelfile")
        # The window opens the Export dialog (a tab opens no other tab or dialog).
        self.export_button.clicked.connect(lambda: self.export_requested.emit(self.export_source()))
        footer = QHBoxLayout()
        footer.addWidget(self.stats_label, stretch=1)
        footer.addWidget(self.open_button)
        footer.addWidget(self.save_button)
        footer.addWidget(self.export_button)

        middle = QHBoxLayout()
        middle.addWidget(self.splitter, stretch=1)
        middle.addWidget(self.settings_box, alignment=Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_box)
        layout.addLayout(middle, stretch=1)
        layout.addWidget(self.turn_hint)
        layout.addLayout(prompt_row)
        layout.addLayout(footer)

    # --- choosing a model -------------------------------------------------------------------------------
    def set_model(self, base: str, adapter: Path | None = None) -> None:
        """Prefill the fields (e.g. with the run that just finished)."""
        self.base_edit.setText(base)
        self.adapter_edit.setText(str(adapter) if adapter else "")

    def _on_runs_changed(self, change: RunsChange) -> None:
        fields = self._fields()
        base, adapter = fields_after(change, fields)
        if (base, adapter) != fields:
            self.base_edit.setText(base)
            self.adapter_edit.setText(adapter)

    def _browse_base(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a base model folder")
        if folder:
            self.base_edit.setText(folder)

    def _browse_adapter(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an adapter or run folder")
        if folder:
            self.adapter_edit.setText(folder)

    def _fill_runs_menu(self) -> None:
        self.runs_menu.clear()
        runs = self.runs.finished_runs()  # the runs session's last scan: opening the menu lists no folder
        if not runs:
            self.runs_menu.addAction("No finished runs yet").setEnabled(False)
        for row in runs[:30]:
            action = self.runs_menu.addAction(row.name)
            action.triggered.connect(lambda checked=False, path=row.path: self.choose_run(path))

    def choose_run(self, run_dir: Path) -> None:
        """Use a run's adapter, with the base model it was trained on."""
        adapter, base = run_adapter(run_dir)
        self.adapter_edit.setText(str(adapter))
        if base is not None:
            self.base_edit.setText(base)

    # --- loading and unloading ------------------------------------------------------------------------
    def _fields(self) -> tuple[str, str]:
        return self.base_edit.text().strip(), self.adapter_edit.text().strip()

    def load_request(self) -> LoadRequest:
        """What Load would load now: the fields and the chosen weights."""
        weights = NF4 if self.load_4bit.isChecked() else ORIGINAL if self.precision_16.isChecked() else AS_TRAINED
        return LoadRequest(*self._fields(), weights=weights)

    def confirm_memory_warning(self, warning: str) -> bool:
        """Ask whether to load anyway (tests replace this)."""
        answer = QMessageBox.warning(self, "GPU memory", f"{warning}\n\nLoad the model anyway?",
                                     QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                     QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def load_model(self) -> BackgroundTask | None:
        request = self.load_request()
        if (problem := request.problem()) is not None:
            self.model_status.setText(problem)
            return None
        self.last_memory_warning = request.memory_warning(self.gpu_info(), self.training_running)
        if self.last_memory_warning and not self.confirm_memory_warning(self.last_memory_warning):
            self.model_status.setText("Not loaded: " + self.last_memory_warning)
            return None
        self.unload_model()
        self.load_button.setEnabled(False)
        self.model_status.setText("Loading…")
        self.session.loading = request
        return self._model_tasks.start(
            lambda state: request.load(), on_result=self._on_loaded,
            on_error=self._on_load_failed,
            # A load replaced by the next one ends while that one runs: the button waits for the last.
            on_done=lambda: self.load_button.setEnabled(not self._model_tasks.busy),
            expected_errors=LOAD_ERRORS, name="chat-load")

    def _on_load_failed(self, error: BaseException) -> None:
        self._send_after_load = None  # the message stays in the prompt field
        self.model_status.setText(f"Could not load: {describe_error(error)}")

    def _on_loaded(self, chat_model) -> None:
        if not self.session.loaded(chat_model, self._fields()):
            self.model_status.setText("The model fields changed while it loaded: loading what they show now…")
            QTimer.singleShot(0, self.load_model)
            return
        self._refresh_adapters()
        self.model_status.setText(self.session.loaded_status())
        self._update_buttons()
        self.model_loaded.emit()
        if (waiting := self._send_after_load) is not None:
            self._send_after_load = None
            self.send(waiting)

    def add_adapter(self) -> BackgroundTask | None:
        """Load the adapter field's adapter beside the loaded ones (the base weights stay)."""
        folder = self.adapter_edit.text().strip()
        model = self.chat_model
        if model is None or not folder or self.session.generating:
            self.model_status.setText("Load a model first, then add more adapters to it." if model is None
                                      else self.model_status.text())
            return None
        self.add_adapter_button.setEnabled(False)

        def added(name: str) -> None:
            self._refresh_adapters()
            self.active_adapter.setCurrentText(name)
            self.model_status.setText(self.session.added_status(name))

        return self._model_tasks.start(
            lambda state: model.add_adapter(folder), on_result=added,
            on_error=lambda error: self.model_status.setText(f"Could not add the adapter: {describe_error(error)}"),
            on_done=self._update_buttons, expected_errors=ADD_ADAPTER_ERRORS, name="chat-add-adapter")

    def _refresh_adapters(self) -> None:
        with signals_blocked(self.active_adapter):
            self.active_adapter.clear()
            if self.chat_model is not None:
                self.active_adapter.addItems(self.chat_model.adapters)
                if self.chat_model.active_adapter:
                    self.active_adapter.setCurrentText(self.chat_model.active_adapter)
        self.tuned_title.setText(f"Tuned: {self.active_adapter.currentText() or 'no adapter'}")

    def _on_active_adapter_chosen(self, name: str) -> None:
        if self.session.set_adapter(name):
            self.tuned_title.setText(f"Tuned: {name}")
            # The adapter field names the adapter that answers, so Send does not switch back to another one.
            self.adapter_edit.setText(str(self.chat_model.adapter_paths[name]))
            self._update_buttons()

    def unload_model(self) -> None:
        """Stop any reply, drop the model and return its memory."""
        self.stop_generation()
        # Wait without cancelling: the stopped reply still arrives and is kept, as Stop keeps it.
        for task in (self._generator, self._model_tasks.current):
            if task is not None:
                task.wait()
        if self.session.unload():
            self._refresh_adapters()
            self.model_status.setText("Unloaded; its memory is free again.")
            self.model_unloaded.emit()
        self._update_buttons()

    # --- generation ---------------------------------------------------------------------------------------
    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens.value(), temperature=self.temperature.value(),
            top_p=self.top_p.value(), top_k=self.top_k.value(), repetition_penalty=self.repetition_penalty.value(),
            seed=None if self.seed.value() < 0 else self.seed.value())

    def _update_sampling_widgets(self) -> None:
        sampling = self.temperature.value() > 0
        for widget in (self.top_p, self.top_k, self.seed):
            widget.setEnabled(sampling)

    @property
    def compare_mode(self) -> bool:
        return self.session.compare

    def _on_compare_toggled(self, on: bool) -> None:
        self.session.set_compare(on)
        self.base_pane.setVisible(on)
        self.tuned_title.setVisible(on)
        if on:
            self.base_transcript.clear()
            half = max(self.splitter.width() // 2, 200)
            self.splitter.setSizes([half, half])

    def send(self, text: str | None = None) -> None:
        text = (text if isinstance(text, str) else self.prompt_edit.text()).strip()
        if text and not self.session.generating and self.session.must_load_for(self._fields()):
            # The fields name another model than the loaded one (Open in Chat, a run that ended): it answers.
            self._send_after_load = text if self.load_model() is not None else None
            return
        self._refresh_adapters()  # a named adapter loaded beside others became the active one
        if not self.session.ask(text):
            return
        self.prompt_edit.clear()
        self.transcript.add_message("user", text)
        self._show_turn_hint()
        if self.compare_mode:
            self.base_transcript.add_message("user", text)
        self._generate()

    def _show_turn_hint(self) -> None:
        warning = self.session.turn_hint()
        self.turn_hint.setText(warning or "")
        self.turn_hint.setVisible(bool(warning))

    def regenerate(self) -> None:
        """Drop the last reply (both sides in compare mode) and answer the last message again."""
        if self.session.regenerate():
            self._show_history(TUNED)
            self._show_history(BASE)
            self._generate()

    def _show_history(self, side: str) -> None:
        self._view(side).show_messages(self.session.side_history(side),
                                       lambda index: self.session.reply_label(side, index))

    def _generate(self) -> None:
        plan = self.session.start_replies()
        if plan.base_error:
            self._show_history(BASE)
            self.base_transcript.add_message("error", plan.base_error)
        for side, _, _ in plan.jobs:
            self._view(side).add_message("assistant", answered_by=self.session.answering[side])
        model, settings, stop = self.chat_model, self.generation_settings(), threading.Event()

        def work(state) -> None:
            # Each callback of the loop is replayed on the GUI thread, in the order it was made.
            def relay(handler):
                return lambda *args: state.partial((handler, args))

            generate_replies(model, plan.jobs, settings, stop=stop, on_piece=relay(self._on_piece),
                             on_reply=relay(self._on_reply_done), on_failed=relay(self._on_failed))

        self._stop = stop
        task = self._replies.start(work, on_partial=lambda call: call[0](*call[1]),
                                   on_done=lambda: self._on_replies_ended(task), name="chat-replies")
        self._generator = task
        self.stats_label.setText("Generating…")
        self._update_buttons()

    def _view(self, side: str) -> QtTranscript:
        return self.base_transcript if side == BASE else self.transcript

    def _on_piece(self, side: str, piece: str) -> None:
        self._view(side).append_piece(piece)
        if side == TUNED:
            self.piece_received.emit(piece)

    def _on_reply_done(self, side: str, reply: str, stats: ReplyStats) -> None:
        self.session.reply_done(side, reply, stats)
        self.stats_label.setText(self.session.stats_text())
        (self.base_reply_finished if side == BASE else self.reply_finished).emit(reply)

    def _on_failed(self, side: str, message: str) -> None:
        self._view(side).add_message("error", self.session.reply_failed(side, message))
        self.stats_label.setText("Generation failed.")

    def _on_replies_ended(self, task: BackgroundTask) -> None:
        if task is self._generator:  # not replies that Clear dropped
            self._end_generation()

    def _end_generation(self) -> None:
        for side in self.session.finish_replies():
            self._show_history(side)
            self._view(side).add_message("note", STOPPED_NOTE)
        self._generator = self._stop = None
        self._update_buttons()
        self.generation_finished.emit()

    def stop_generation(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def clear(self) -> None:
        self.stop_generation()
        if self._generator is not None:
            self._replies.shutdown()  # the rest of a dropped reply must not land in the cleared conversation
            self._end_generation()
        self.session.clear()
        self.transcript.clear()
        self.base_transcript.clear()
        self.stats_label.setText("")
        self.turn_hint.hide()
        self._update_buttons()

    def _update_buttons(self) -> None:
        ready, generating = self.chat_model is not None, self.session.generating
        self.send_button.setEnabled(ready and not generating)
        self.regenerate_button.setEnabled(self.session.can_regenerate())
        self.transcript.setPlaceholderText(self.session.prompt_placeholder())
        self.prompt_edit.setEnabled(ready)
        self.stop_button.setEnabled(generating)
        self.unload_button.setEnabled(ready)
        self.add_adapter_button.setEnabled(ready and not generating)
        self.active_adapter.setEnabled(ready and not generating and self.active_adapter.count() > 0)

    # --- conversations --------------------------------------------------------------------------------------
    def conversation(self):
        return self.session.conversation(dict(self.generation_settings().__dict__), self._fields())

    def save_conversation_to(self, path: Path) -> Path:
        return self.session.save(Path(path), dict(self.generation_settings().__dict__), self._fields())

    def open_conversation_from(self, path: Path) -> None:
        """Show a saved conversation; the next message continues it."""
        conversation = self.session.read(Path(path))
        if self.chat_model is None and conversation.model and not self.base_edit.text().strip():
            self.base_edit.setText(conversation.model)
            if conversation.adapters:
                self.adapter_edit.setText(conversation.adapters[0])
        self.open_conversation(conversation)

    def open_conversation(self, conversation) -> None:
        """Show a conversation (its system prompt, turns and settings); the next message continues it."""
        self.clear()
        self.system_prompt.setPlainText(conversation.system_prompt)
        widgets = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                   "top_k": self.top_k, "repetition_penalty": self.repetition_penalty, "seed": self.seed}
        for key, value in saved_generation(conversation.generation).items():
            widgets[key].setValue(value)
        self.compare_check.setChecked(conversation.base_messages is not None)
        self.session.open(conversation)
        self._show_history(TUNED)
        if conversation.base_messages is not None:
            self._show_history(BASE)
        self._update_buttons()

    def open_prompt(self, model: Path | str, messages: list[dict[str, str]]) -> None:
        """An eval case to ask again: a run's adapter (Path) or a base model (str) in the fields, the turns
        before the question as the conversation, the question in the prompt field, ready to send."""
        if isinstance(model, Path):
            self.choose_run(model)
        else:
            self.set_model(model)
        *before, question = messages
        self.open_conversation(self.session.turns(before))
        self.prompt_edit.setText(question["content"] if question["role"] == "user" else "")

    def _save_conversation_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save conversation", "conversation.json", "JSON (*.json)")
        if path:
            self.save_conversation_to(Path(path))
            self.stats_label.setText(f"Saved {path}")

    def _open_conversation_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open conversation", "", "JSON (*.json)")
        if path:
            try:
                self.open_conversation_from(Path(path))
            except CONVERSATION_ERRORS as error:
                QMessageBox.warning(self, "Cannot open the conversation", str(error))

    # --- export -----------------------------------------------------------------------------------------------
    def export_source(self) -> Path | None:
        """The run (or adapter folder) to export: the active adapter's, else the adapter field's."""
        return self.session.export_source(self.adapter_edit.text())

    def shutdown(self) -> None:
        self.stop_generation()
        for runner in (self._replies, self._model_tasks):
            task = runner.current
            # A model still loading is waited for however long it takes, as the window always has: its thread
            # cannot be interrupted inside from_pretrained, and one destroyed while it runs aborts the process.
            if not runner.shutdown() and task is not None:
                task.wait()
