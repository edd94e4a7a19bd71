"""The Export dialog: pick a trained run, an export kind and where to write it; progress and cancel.

Each kind is one core function (`studio.core.export.jobs.run_export`) run on a background task; its
`on_progress(fraction, message)` drives the progress bar and Cancel sets its `threading.Event`. After a merged
model or a GGUF file is written, "Verify export" runs `jobs.verify_export` the same way: the run's cases answered
by the studio and by the export, the result shown under the status and stated on the export's model card.

The GGUF type list, its sizes, what fits, the preselection and why, and the verification's result are the
`core.sessions.export.ExportSession`'s: the dialog renders it and hands the user's choices to it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
    QInputDialog, QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)
from superqt.utils import signals_blocked

from studio.core.export.staging import ExportError, OutputHoldsOtherFiles, OutputNeedsOverwrite
from studio.core.export.jobs import (
    ExportKind, check_target, default_exports_dir, run_export, verify_export,
)
from studio.core.sessions.export import ExportSession
from studio.ui.background import TaskRunner, WindowTaskState, describe_error


_CANCELLED = object()
"""What the export task returns when Cancel stopped it (ExportCancelled)."""


def _export(kind: ExportKind, source: Path, output: Path, weights: str, overwrite: bool, gguf_type: str,
            context: int, cancel: threading.Event, state: WindowTaskState) -> Any:
    """One export on the background task; Cancel ends it as `_CANCELLED`, a result like any other."""
    from studio.core.export.staging import ExportCancelled

    try:
        return run_export(kind, source, output, weights=weights, overwrite=overwrite, gguf_type=gguf_type,
                          context=context, task=state.stopping_on(cancel))
    except ExportCancelled:
        return _CANCELLED


VERIFIABLE = (ExportKind.MERGED, ExportKind.GGUF)
"""The kinds that answer on their own, so their replies can be compared with the studio's."""


def _verified_text(result: Any) -> str:
    """The result line: the headline, then the first differing replies side by side."""
    lines = [result.headline()]
    for case in result.differing[:2]:
        export = case.error or repr(_clip(case.export))
        lines.append(f"case {case.case} ({_clip(case.question, 40)}): studio {_clip(case.studio)!r}, export {export}")
    return "\n".join(lines)


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


class QtExportProgress(QObject):
    """What `start_export` returns: `progress(fraction, message)` of that export, on the GUI thread."""

    progress = Signal(float, str)


class QtExportDialog(QDialog):
    """Signals `export_finished(str status, str message)` with status succeeded | failed | cancelled, and
    `verify_finished(str status, str message)` likewise for "Verify export"."""

    export_finished = Signal(str, str)
    verify_finished = Signal(str, str)

    def __init__(self, source: Path | None = None, *, runs: Sequence[Path] = (), parent: QWidget | None = None,
                 session: ExportSession | None = None):
        super().__init__(parent)
        self.session = session if session is not None else ExportSession()
        self.setWindowTitle("Export a trained model")
        self.setMinimumWidth(640)
        self.tasks = TaskRunner(self)
        # Cancel is the export's own event, not the task's: an export that ends despite a late Cancel is still
        # reported as written (a cancelled task's result would be dropped).
        self._cancel = threading.Event()
        self._progress: QtExportProgress | None = None
        self.last_result: Any = None
        self._output_edited = False
        self._confirmed_output: Path | None = None  # a file the save dialog already asked to overwrite

        self.source_combo = QComboBox()
        self.source_combo.setEditable(True)
        self.source_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.source_combo.lineEdit().setPlaceholderText("a run folder or an adapter folder")
        for run in runs:  # the finished runs, newest first: the window's one scan (sessions.runs)
            self.source_combo.addItem(run.name, str(run))
        if source is not None:
            index = self.source_combo.findData(str(source))
            if index < 0:
                self.source_combo.insertItem(0, str(source), str(source))
                index = 0
            self.source_combo.setCurrentIndex(index)
        self.source_combo.currentIndexChanged.connect(self._suggest_output)
        self.source_combo.lineEdit().editingFinished.connect(self._suggest_output)
        source_browse = QPushButton("Browse…")
        source_browse.clicked.connect(self._browse_source)
        self._browse_buttons = [source_browse]

        self.output_edit = QLineEdit()
        self.output_edit.textEdited.connect(lambda: setattr(self, "_output_edited", True))

        self.kind_buttons: dict[ExportKind, QRadioButton] = {}
        kinds = QGroupBox("What to export")
        kinds_layout = QVBoxLayout(kinds)
        group = QButtonGroup(self)
        for kind in ExportKind:
            # One line each: the description is the tooltip, so the dialog stays short enough for a laptop screen.
            button = QRadioButton(kind.label)
            button.setToolTip(kind.description)
            kinds_layout.addWidget(button)
            group.addButton(button)
            button.toggled.connect(lambda on, kind=kind: on and self._kind_changed())
            self.kind_buttons[kind] = button
        # The GGUF type list: each type's file size and the memory it needs at the context, what fits this machine,
        # and the type preselected (the one `finetune-studio export gguf --type auto` picks).
        self.type_combo = QComboBox()
        self.type_combo.activated.connect(lambda index: self.session.set_gguf_type(self.type_combo.itemData(index)))
        self.context_spin = QSpinBox()
        self.context_spin.setRange(256, 131072)
        self.context_spin.setSingleStep(1024)
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setToolTip("The context the types are sized for; the Modelfile sets it (PARAMETER num_ctx)")
        self.context_spin.editingFinished.connect(lambda: self.session.set_context(self.context_spin.value()))
        self.type_why = QLabel()
        self.type_why.setWordWrap(True)
        self.type_why.setStyleSheet("color: #444;")
        self.gguf_box = QWidget()
        gguf_form = QFormLayout(self.gguf_box)
        gguf_form.setContentsMargins(22, 0, 0, 0)
        type_row = QHBoxLayout()
        type_row.addWidget(self.type_combo, stretch=1)
        # Without llama.cpp's quantizer the K-quants are listed, not offered: point the studio at a llama-quantize once.
        self.quantizer_button = QPushButton("Use llama-quantize…")
        self.quantizer_button.setToolTip("Choose a llama-quantize program (from a llama.cpp release or Homebrew); "
                                         "the studio remembers it and makes the K-quants with it")
        self.quantizer_button.clicked.connect(lambda: self.choose_quantizer())
        type_row.addWidget(self.quantizer_button)
        type_row.addWidget(QLabel("at"))
        type_row.addWidget(self.context_spin)
        gguf_form.addRow("GGUF type", type_row)
        gguf_form.addRow(self.type_why)
        kinds_layout.addWidget(self.gguf_box)
        self.kind_buttons[ExportKind.GGUF].setChecked(True)
        # The default merges into the weights the adapter trained on (a QLoRA run's 4-bit base, dequantised), so
        # the export answers like the trained model; the original weights are a choice whose effect is measured.
        self.original_weights = QCheckBox("Merge into the original 16-bit weights, not the ones it was trained on")
        self.original_weights.setToolTip(
            "A QLoRA adapter learned corrections for the 4-bit base it trained on; on the original 16-bit weights "
            "it can answer differently. With this on, the export compares its replies with the trained model's "
            "on the run's own examples and states the agreement on the model card.")
        kinds_layout.addWidget(self.original_weights)
        output_browse = QPushButton("Browse…")
        output_browse.clicked.connect(self._browse_output)
        self._browse_buttons.append(output_browse)

        form = QFormLayout()
        source_row = QHBoxLayout()
        source_row.addWidget(self.source_combo, stretch=1)
        source_row.addWidget(source_browse)
        form.addRow("Trained run", source_row)
        output_row = QHBoxLayout()
        output_row.addWidget(self.output_edit, stretch=1)
        output_row.addWidget(output_browse)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        self.status_label = QLabel("Choose what to export, then press Export.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.verify_button = self.buttons.addButton("Verify export", QDialogButtonBox.ButtonRole.ActionRole)
        self.ollama_button = self.buttons.addButton("Create in Ollama…", QDialogButtonBox.ButtonRole.ActionRole)
        self.ollama_button.clicked.connect(lambda: self.create_in_ollama())
        self.ollama_button.setVisible(False)  # until a GGUF file and its Modelfile are written
        self._ollama: tuple[Path, Path | None] | None = None  # (the Modelfile, the run it was exported from)
        self.cancel_button = self.buttons.addButton("Cancel export", QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.start_export)
        self.verify_button.clicked.connect(self.start_verify)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.close_button.clicked.connect(self.close)
        self.cancel_button.setEnabled(False)
        self.verify_button.setVisible(False)  # until a merged model or GGUF file of a run is written
        self._verifiable: tuple[Path, Path] | None = None  # (the run or adapter, the export written from it)
        self.last_verification: Any = None
        self.verify_label = QLabel()
        self.verify_label.setWordWrap(True)
        self.verify_label.setToolTip(self.session.verify_rule)
        self.verify_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verify_label.setVisible(False)

        intro = QLabel("<b>Export a trained model</b> — for transformers, llama.cpp or Ollama. Every export "
                       "carries the run's chat template and a model card with its loss curve.")
        intro.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(kinds)
        output_form = QFormLayout()
        output_form.addRow("Write to", output_row)
        layout.addLayout(output_form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.verify_label)
        layout.addStretch(1)
        layout.addWidget(self.buttons)
        # Methods, not lambdas: Qt drops a bound method's connection when the dialog goes, a lambda's it keeps.
        self._unsubscribe = self.session.subscribe(self._render_session)
        self.destroyed.connect(self._unsubscribe)
        self._source_changed()
        self.source_combo.currentIndexChanged.connect(self._source_changed)
        self.source_combo.lineEdit().editingFinished.connect(self._source_changed)

    def _source_changed(self) -> None:
        self.session.set_source(self.source)

    # --- the session ------------------------------------------------------------------------------------------
    def _render_session(self) -> None:
        session = self.session
        with signals_blocked(self.type_combo):
            self.type_combo.clear()
            for gguf_type, label, sizes, fits, available in session.rows():
                mark = "fits" if fits else "does not fit"
                self.type_combo.addItem(f"{label} — {sizes.split(' (')[0]}, {mark}"
                                        + ("" if available else " (needs llama.cpp)"), gguf_type)
                item = self.type_combo.model().item(self.type_combo.count() - 1)
                item.setEnabled(available)
                item.setToolTip(sizes)
            index = self.type_combo.findData(session.gguf_type)
            if index >= 0:
                self.type_combo.setCurrentIndex(index)
        with signals_blocked(self.context_spin):
            self.context_spin.setValue(session.context)
        self.type_why.setText(session.why())
        self.quantizer_button.setVisible(not session.k_quants)
        self._render_verification()
        self._fit_labels()
        self._suggest_output()

    def _render_verification(self) -> None:
        text = self.session.verification_text()
        if not text:
            return
        result = self.session.verification
        if result is None:  # the check could not run: no score, only why
            colour, shown = "#b00020", text
        else:
            colour = "#1b7f3b" if result.passes and not result.differing else "#8a6d00" if result.passes else "#b00020"
            shown = result.headline()  # the first differing token of each case says where; the replies in full:
            self.verify_label.setToolTip(_verified_text(result) + "\n\n" + self.session.verify_rule)
        self.verify_label.setText(f"<span style='color:{colour}; font-weight:600'>{_html(shown)}</span>"
                                  f"<br><span style='color:#666'>{_html(self.session.verify_rule)}</span>")
        self.verify_label.setVisible(True)
        self._fit_labels()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """As tall as the wrapped labels need at the dialog's width: Qt's own hint takes a wrapped label at its
        narrowest height, so a long result would be squashed into two lines."""
        hint = super().minimumSizeHint()
        layout = self.layout()
        if layout is None or not layout.hasHeightForWidth():
            return hint
        width = max(hint.width(), self.minimumWidth(), self.width() if self.isVisible() else 0)
        return QSize(hint.width(), max(hint.height(), layout.minimumHeightForWidth(width)))

    def _fit_labels(self) -> None:
        """Grow to the height the labels need now (a verification's result, a long status)."""
        self.setMinimumHeight(self.minimumSizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit_labels()

    def _kind_changed(self) -> None:
        self.gguf_box.setVisible(self.kind is ExportKind.GGUF)
        self._suggest_output()

    # --- choices ------------------------------------------------------------------------------------------
    @property
    def kind(self) -> ExportKind:
        return next(kind for kind, button in self.kind_buttons.items() if button.isChecked())

    def set_kind(self, kind: ExportKind) -> None:
        self.kind_buttons[kind].setChecked(True)

    @property
    def source(self) -> Path | None:
        data = self.source_combo.currentData()
        text = self.source_combo.currentText().strip()
        if data and self.source_combo.itemText(self.source_combo.currentIndex()) == text:
            return Path(data)
        return Path(text) if text else None

    def set_source(self, folder: Path) -> None:
        self.source_combo.setEditText(str(folder))
        self._suggest_output()

    def set_output(self, path: Path) -> None:
        self.output_edit.setText(str(path))
        self._output_edited = True

    def _suggest_output(self) -> None:
        source = self.source
        if self._output_edited or source is None:
            return
        run_name = source.parent.name if source.name == "adapter" else source.name
        folder = default_exports_dir()
        gguf_type = self.session.gguf_type if self.kind is ExportKind.GGUF else None
        self.output_edit.setText(str(self.kind.default_output(run_name or "model", folder, gguf_type)))

    def _browse_source(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a run or adapter folder")
        if folder:
            self.set_source(Path(folder))

    def _browse_output(self) -> None:
        current = self.output_edit.text().strip()
        if self.kind.is_file:
            suffix = ".gguf" if self.kind is ExportKind.GGUF else ".zip"
            path, _ = QFileDialog.getSaveFileName(self, "Export to", current, f"*{suffix}")
            # The save dialog has already asked before choosing an existing file: do not ask twice.
            self._confirmed_output = Path(path).resolve() if path else None
        else:
            path = QFileDialog.getExistingDirectory(self, "Export into a new folder inside")
            if path:
                path = str(Path(path) / Path(current).name)
        if path:
            self.set_output(Path(path))

    # --- running --------------------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.tasks.busy

    def start_export(self) -> QtExportProgress | None:
        source, output = self.source, self.output_edit.text().strip()
        if source is None or not output:
            self.status_label.setText("Choose a trained run and where to write the export.")
            return None
        if self.is_running:
            return self._progress
        # The output rule of every export (staging.check_output): an unchanged earlier export is replaced only after
        # a question; anything else there is refused with a free name offered instead, never deleted.
        overwrite = False
        try:
            target = check_target(self.kind, source, Path(output))
        except OutputNeedsOverwrite as error:
            target = error.output
            if target != self._confirmed_output and not self.confirm_replace(target):
                self.status_label.setText(f"Nothing exported: {target} was kept. Choose another place to write to.")
                return None
            overwrite = True
        except OutputHoldsOtherFiles as error:
            self.set_output(error.suggestion)
            self._finish("failed", f"{error}\nThe name {error.suggestion.name} is free and now filled in: press "
                                   "Export to write there.")
            return None
        except ExportError as error:
            self._finish("failed", str(error))
            return None
        merges = self.kind in (ExportKind.MERGED, ExportKind.GGUF)
        weights = "original" if merges and self.original_weights.isChecked() else "trained"
        from studio.core.models.source import ModelLoadError

        self._cancel = cancel = threading.Event()
        self._progress = QtExportProgress(self)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Exporting {self.kind.label.lower()}…")
        self._verifiable = None
        self.verify_button.setVisible(False)
        self.verify_label.setVisible(False)
        self._set_running(True)
        kind, gguf_type, context = self.kind, self.session.gguf_type, self.session.context
        self.tasks.start(lambda state: _export(kind, source, target, weights, overwrite, gguf_type, context, cancel,
                                               state),
                         on_progress=self._on_progress,
                         on_result=lambda result: self._on_result(result, kind=kind, source=source),
                         on_error=lambda error: self._finish("failed", describe_error(error)),
                         on_done=lambda: self._set_running(False), expected_errors=(ExportError, ModelLoadError),
                         name="export")
        return self._progress

    def confirm_replace(self, target: Path) -> bool:
        """Ask before an export replaces an earlier one (check_output has refused anything else)."""
        answer = QMessageBox.question(self, "Replace the earlier export?",
                                      f"{target} holds an earlier export, unchanged since it was written. Replace "
                                      "it with this export? (The old files are kept until the new export is "
                                      "complete.)",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def cancel_export(self) -> None:
        if self.is_running:
            self._cancel.set()
            self.status_label.setText("Cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress_bar.setValue(int(fraction * 1000))
        self.status_label.setText(message)
        if self._progress is not None:
            self._progress.progress.emit(fraction, message)

    def _on_result(self, result: Any, *, kind: ExportKind | None = None, source: Path | None = None) -> None:
        if result is _CANCELLED:
            self._finish("cancelled", "Export cancelled; nothing was left behind.")
            return
        self.last_result = result
        path = getattr(result, "path", result)
        extra = ""
        if getattr(result, "modelfile", None) is not None:
            extra = f"\nOllama: ollama create my-model -f {result.modelfile}"
        for note in getattr(result, "notes", []):
            extra += f"\nNote: {note}"
        if isinstance(result, Path):
            from studio.core.runs.record import RunRecord

            summary = RunRecord.find(result)
            if summary is not None and summary.agreement:
                extra += f"\nAgreement: {summary.agreement}"
        self.progress_bar.setValue(1000)
        self._offer_verify(kind, source, Path(path))
        if getattr(result, "modelfile", None) is not None:
            self._ollama = (Path(result.modelfile), self._verifiable[0] if self._verifiable else None)
            self.ollama_button.setVisible(True)
        self._finish("succeeded", f"Written to {path}{extra}")

    # --- verifying ------------------------------------------------------------------------------------------
    def _offer_verify(self, kind: ExportKind | None, source: Path | None, written: Path) -> None:
        from studio.core.eval.verify import ExportCheckError, check_verifiable

        if kind not in VERIFIABLE or source is None:
            return
        try:
            check_verifiable(source)
        except ExportCheckError as error:  # exported from a merged folder: no adapter answers as the studio
            self.verify_button.setToolTip(str(error))
            self.verify_button.setEnabled(False)
        else:
            self._verifiable = (source, written)
            self.verify_button.setToolTip(f"Answer the run's examples with the studio's model and with {written}, "
                                          "compare the replies and state the result on the model card")
        self.verify_button.setVisible(True)

    def start_verify(self) -> bool:
        """Verify the export just written on the background task; False when there is none to verify."""
        if self._verifiable is None or self.is_running:
            return False
        from studio.core.eval.verify import ExportCheckError
        from studio.core.models.source import ModelLoadError

        source, written = self._verifiable
        self._cancel = cancel = threading.Event()
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Verifying {written}: the studio's replies first…")
        self.verify_label.setVisible(False)
        self._set_running(True, verifying=True)
        self.tasks.start(lambda state: verify_export(source, written, task=state.stopping_on(cancel)),
                         on_progress=self._on_progress, on_result=self._on_verified,
                         on_error=self._on_verify_error,
                         on_done=lambda: self._set_running(False),
                         expected_errors=(ExportCheckError, ExportError, ModelLoadError), name="verify export")
        return True

    def choose_quantizer(self, program: Path | None = None) -> bool:
        """Point the studio at a llama-quantize program (asked with a file dialog when not given); False if none."""
        if program is None:
            chosen, _ = QFileDialog.getOpenFileName(self, "The llama-quantize program")
            if not chosen:
                return False
            program = Path(chosen)
        try:
            used = self.session.use_quantizer(program)
        except ValueError as error:  # not a program this machine can run
            self.status_label.setText(_html(str(error)))
            return False
        self.status_label.setText(_html(f"K-quants are made with {used} from now on."))
        return True

    # --- Ollama ---------------------------------------------------------------------------------------------------
    def create_in_ollama(self, name: str | None = None) -> bool:
        """`ollama create` for the GGUF just written, then its replies through Ollama compared with the trained
        model's. Without Ollama the status says how to install it and the one command to run; a model of that name
        already in Ollama is replaced only after asking. False when nothing was started."""
        if self._ollama is None or self.is_running:
            return False
        modelfile, source = self._ollama
        if name is None:
            name, ok = QInputDialog.getText(self, "Create in Ollama", "Model name in Ollama:",
                                            text=modelfile.stem.lower())
            if not ok or not name.strip():
                return False
        name = name.strip()
        missing = self.session.ollama_missing(modelfile, name)
        if missing:
            self.status_label.setText(_html(missing))
            self._fit_labels()
            return False
        replace = self.session.ollama_has(name)
        if replace and not self.confirm_replace_ollama(name):
            return False
        self._cancel = cancel = threading.Event()
        self.status_label.setText(f"Creating {name} in Ollama from {modelfile.name}…")
        self._set_running(True, verifying=True)
        self.tasks.start(lambda state: self.session.create_in_ollama(name, modelfile, source, replace=replace,
                                                                     task=state.stopping_on(cancel)),
                         on_progress=self._on_progress, on_result=lambda result: self._on_ollama(name, result),
                         on_error=self._on_verify_error, on_done=lambda: self._set_running(False),
                         expected_errors=self.session.ollama_errors(), name="create in ollama")
        return True

    def confirm_replace_ollama(self, name: str) -> bool:
        """Ask before `ollama create` replaces a model the user has in Ollama."""
        answer = QMessageBox.question(self, "Replace the model in Ollama?",
                                      f"Ollama already has a model named {name}. Replace it with this export?")
        return answer == QMessageBox.StandardButton.Yes

    def _on_ollama(self, name: str, result: Any) -> None:
        if isinstance(result, str):
            self._finish("succeeded", f"Created {name} in Ollama ({result}). Run it: ollama run {name}",
                         verifying=True)
            return
        if result.status != "completed":
            self._finish("cancelled", f"{name} is in Ollama; its check was cancelled.", verifying=True)
            return
        self.session.set_verification(result)
        self.progress_bar.setValue(1000)
        self._finish("succeeded", f"Created {name} in Ollama and checked it through Ollama's chat API: "
                                  f"{result.headline()}. Run it: ollama run {name}", verifying=True)

    def _on_verify_error(self, error: BaseException) -> None:
        self.session.set_verification(error=describe_error(error))
        self._finish("failed", f"Verification failed: {describe_error(error)}", verifying=True)

    def _on_verified(self, result: Any) -> None:
        self.last_verification = result
        if result.status != "completed":
            self._finish("cancelled", "Verification cancelled; the model card was left as it was.", verifying=True)
            return
        self.session.set_verification(result)
        self.progress_bar.setValue(1000)
        self._finish("succeeded", f"Verified with {result.engine} on {result.cases_from}; recorded on the model "
                                  f"card {result.readme}", verifying=True)

    def _finish(self, status: str, message: str, *, verifying: bool = False) -> None:
        colour = {"succeeded": "#1b7f3b", "failed": "#b00020", "cancelled": "#8a6d00"}[status]
        self.status_label.setText(f"<span style='color:{colour}; font-weight:600'>{status.upper()}</span> "
                                  f"{_html(message)}")
        if status != "succeeded":
            self.progress_bar.setValue(0)
        self._fit_labels()
        (self.verify_finished if verifying else self.export_finished).emit(status, message)

    def _set_running(self, running: bool, *, verifying: bool = False) -> None:
        self.export_button.setEnabled(not running)
        self.verify_button.setEnabled(not running and self._verifiable is not None)
        self.ollama_button.setEnabled(not running and self._ollama is not None)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setText("Cancel verification" if verifying else "Cancel export")
        self.close_button.setEnabled(not running)
        for widget in (self.source_combo, self.output_edit, *self._browse_buttons, *self.kind_buttons.values(),
                       self.original_weights, self.type_combo, self.context_spin):
            widget.setEnabled(not running)

    def shutdown(self) -> None:
        self._cancel.set()
        self.tasks.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.is_running:
            event.ignore()  # cancel first: closing mid-export would leave the thread running
            return
        super().closeEvent(event)

    def reject(self) -> None:  # Escape
        if not self.is_running:
            super().reject()


def _html(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "<br>")
