"""Choosing the base model: a local folder, a model already in the Hugging Face cache, or a Hub id
downloaded with a progress bar (cancel keeps what was fetched; starting again resumes)."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, Signal
from PySide6.QtGui import QAction
from superqt.utils import signals_blocked
from PySide6.QtWidgets import (
    QCheckBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMenu, QProgressBar, QPushButton, QSizePolicy,
    QVBoxLayout, QWidget,
)

from studio.core.config.settings import field_help
from studio.core.system.units import format_bytes
from studio.core.models.download import DownloadProgress, download_model
from studio.core.models.source import ModelSourceError, cached_snapshot, list_cached_models
from studio.core.system.paths import hf_cache_dir, looks_like_hub_id
from studio.ui.background import BackgroundTask, TaskRunner, describe_error
from studio.ui.widgets import _plot_style as style

__all__ = ["QtModelPicker"]

TRUST_WARNING = ("Trusting remote code runs Python files from the model's repository on this computer, with your "
                 "permissions. Tick it only for a model whose code you trust; it is cleared when the model changes.")


class QtModelPicker(QWidget):
    """The model line edit with Browse / In cache / Download, a download progress bar and trust_remote_code.

    Signals: `model_changed(str)` when the user picks or types a model (not from `set_model`),
    `trust_changed(bool)`, `download_finished(str)` with the snapshot folder, `download_failed(str)`.
    """

    model_changed = Signal(str)
    trust_changed = Signal(bool)
    download_finished = Signal(str)
    download_failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("a local model folder, or a Hub id such as meta-llama/Llama-3.2-3B-Instruct")
        self.model_edit.setToolTip(field_help("model", "name_or_path"))
        self.browse_button = QPushButton("Folder…")
        self.browse_button.setToolTip("Choose a local model folder (with config.json and weights)")
        # A push button with a menu: it looks like its neighbours, and its size hint leaves room for the
        # menu arrow (a tool button draws its arrow over the text).
        self.cache_button = QPushButton("In cache")
        self.cache_menu = QMenu(self.cache_button)
        self.cache_menu.aboutToShow.connect(self.refresh_cache_menu)
        self.cache_button.setMenu(self.cache_menu)
        self.cache_button.setToolTip("Models already in your Hugging Face cache, with their size on disk")
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Download this Hub id into the Hugging Face cache (resumes an interrupted "
                                        "download)")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        # Wrapped, not elided: a download error is read to its last word ("…: 401 Client Error" told nothing).
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.trust_remote_code = QCheckBox("Trust remote code")
        self.trust_remote_code.setToolTip(f"{field_help('model', 'trust_remote_code')}\n\n{TRUST_WARNING}")
        self.trust_warning = QLabel("⚠ runs the model repository's own Python code on this computer")
        self.trust_warning.setStyleSheet(f"color: {style.ORANGE};")
        self.trust_warning.setToolTip(TRUST_WARNING)
        self.trust_warning.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.model_edit, stretch=1)
        for widget in (self.browse_button, self.cache_button, self.download_button):
            row.addWidget(widget)
        second = QHBoxLayout()
        second.setContentsMargins(0, 0, 0, 0)
        second.addWidget(self.trust_remote_code)
        second.addWidget(self.trust_warning)
        second.addSpacing(12)
        second.addWidget(self.progress_bar, stretch=1)
        second.addWidget(self.cancel_button)
        second.addWidget(self.status_label, stretch=2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(second)
        self._set_downloading(False)

        self._trusted_for: str | None = None
        self._download_error = False
        self._cancel = threading.Event()
        self.download_worker: BackgroundTask | None = None
        self._tasks = TaskRunner(self)  # the download
        self.browse_button.clicked.connect(self._browse)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(self.cancel_download)
        self.model_edit.textEdited.connect(self._on_text_edited)
        self.trust_remote_code.toggled.connect(self._on_trust_toggled)
        self._update_download_button()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # --- the model ----------------------------------------------------------------------------------
    def model(self) -> str:
        return self.model_edit.text().strip()

    def set_model(self, name_or_path: str, *, trust_remote_code: bool = False) -> None:
        """Show a model without emitting `model_changed`."""
        if name_or_path != self.model():
            self._clear_download_error()
        self.model_edit.setText(name_or_path)
        with signals_blocked(self.trust_remote_code):
            self.trust_remote_code.setChecked(trust_remote_code)
        self._trusted_for = name_or_path if trust_remote_code else None
        self.trust_warning.setVisible(trust_remote_code)
        self._update_download_button()

    def choose(self, name_or_path: str) -> None:
        """Pick a model as the user would (emits `model_changed`)."""
        self.model_edit.setText(name_or_path)
        self._on_text_edited(name_or_path)

    def _on_text_edited(self, text: str) -> None:
        self._clear_download_error()  # the error was about the model the field held before
        # trust_remote_code was given to one model; a different model must be trusted again.
        if self.trust_remote_code.isChecked() and text.strip() != self._trusted_for:
            self.trust_remote_code.setChecked(False)
        self._update_download_button()
        self.model_changed.emit(text.strip())

    def _on_trust_toggled(self, checked: bool) -> None:
        self._trusted_for = self.model() if checked else None
        self.trust_warning.setVisible(checked)
        self.trust_changed.emit(checked)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.choose(folder)

    def refresh_cache_menu(self) -> None:
        """List the models in the HF cache (fast: reads the cache folder only)."""
        self.cache_menu.clear()
        try:
            models = list_cached_models()
        except Exception as error:  # noqa: BLE001 - a broken cache must not break the menu
            models = []
            self.status_label.setText(f"Could not read the Hugging Face cache: {error}")
        if not models:
            action = QAction(f"No models in the Hugging Face cache ({hf_cache_dir()})", self.cache_menu)
            action.setEnabled(False)
            self.cache_menu.addAction(action)
            return
        for cached in models:
            label = f"{cached.repo_id}    {format_bytes(cached.size_bytes, style='memory')}"
            if not cached.has_weights:
                label += "  (config only)"
            action = QAction(label, self.cache_menu)
            action.triggered.connect(lambda _=False, repo=cached.repo_id: self.choose(repo))
            self.cache_menu.addAction(action)

    # --- downloads ------------------------------------------------------------------------------------
    def _update_download_button(self) -> None:
        text = self.model()
        hub = bool(text) and looks_like_hub_id(text)
        downloading = self.download_worker is not None
        self.download_button.setEnabled(hub and not downloading)
        if hub and cached_snapshot(text) is not None:
            self.download_button.setText("Update")
            self.download_button.setToolTip("In your Hugging Face cache; downloads missing or newer files")
        else:
            self.download_button.setText("Download")
            self.download_button.setToolTip("Download this Hub id into the Hugging Face cache (an interrupted "
                                            "download resumes)")

    def _set_downloading(self, downloading: bool) -> None:
        self.progress_bar.setVisible(downloading)
        self.cancel_button.setVisible(downloading)
        self.cancel_button.setEnabled(downloading)

    def start_download(self) -> BackgroundTask | None:
        repo_id = self.model()
        if not looks_like_hub_id(repo_id) or self.download_worker is not None:
            return None
        self._cancel.clear()
        self.progress_bar.setRange(0, 0)  # busy until the file list and sizes are known
        self.progress_bar.setFormat("listing files…")
        self._set_downloading(True)
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Downloading {repo_id} into {hf_cache_dir()}")
        # Cancel is the download's own flag, not the task's: a cancelled download still reports how it ended
        # (DownloadCancelled says what was kept), which a cancelled task's error would not.
        cancel = self._cancel
        self.download_worker = self._tasks.start(
            lambda state: download_model(repo_id, task=state.stopping_on(cancel)),
            on_progress=self._on_download_progress, on_result=self._on_download_done,
            on_error=self._on_download_error, on_done=self._on_download_ended,
            expected_errors=(ModelSourceError,), name=f"download {repo_id}")
        self._update_download_button()
        return self.download_worker

    def cancel_download(self) -> None:
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self.progress_bar.setFormat("cancelling…")

    def _on_download_progress(self, progress: DownloadProgress) -> None:
        if not progress.total_bytes:
            return
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(int(1000 * min(progress.done_bytes / progress.total_bytes, 1.0)))
        files = f", file {progress.files_done} of {progress.files_total}" if progress.files_total else ""
        self.progress_bar.setFormat(f"{format_bytes(progress.done_bytes, style='memory')} of {format_bytes(progress.total_bytes, style='memory')}"
                                    f"{files}")

    def _on_download_done(self, folder: Path) -> None:
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Downloaded: {folder}")
        self.download_finished.emit(str(folder))

    def _clear_download_error(self) -> None:
        if self._download_error:
            self._download_error = False
            self.status_label.setStyleSheet("")
            self.status_label.clear()
            self.status_label.setToolTip("")

    def _on_download_error(self, error: BaseException) -> None:
        # A ModelSourceError's message is written for the user (a bad id, no network, cancelled: what was kept).
        self._on_download_failed(str(error) if isinstance(error, ModelSourceError) else describe_error(error))

    def _on_download_failed(self, message: str) -> None:
        self._download_error = True
        self.status_label.setStyleSheet(f"color: {style.RED};")
        self.status_label.setText(message)
        self.status_label.setToolTip(message)
        self.download_failed.emit(message)

    def _on_download_ended(self) -> None:
        self.download_worker = None
        self._set_downloading(False)
        self._update_download_button()

    def shutdown(self) -> None:
        """Cancel a running download and wait for its thread (the files fetched so far stay cached)."""
        if self.download_worker is not None:
            self._cancel.set()
        self._tasks.shutdown()
