"""Training tab: Start / Stop / Resume, progress, live curves, GPU memory, the run's log, and the ending.

One run at a time goes through a QtTrainingSupervisor. The tab draws everything from the run's
events (the supervisor relays events.jsonl from its first line), so a fresh run, a resumed run and
a run re-attached after the window was reopened are all shown by the same code path.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMainWindow, QMenu, QMessageBox, QProgressBar,
    QProgressDialog, QPushButton, QSplitter, QStyle, QSystemTrayIcon, QToolButton, QVBoxLayout, QWidget,
)

from studio.core.config.settings import ConfigError, RunConfig, copy_config, load_config, save_config
from studio.core.system.gpu import TelemetrySource, detect_telemetry
from studio.core.system.units import format_duration
from studio.core.runs.store import RunDirectory, RunStore, default_run_name, renamed_note
from studio.core.sessions.run_name import RunNaming
from studio.ui.training_supervisor import QtTrainingSupervisor
from studio.ui.background import BackgroundTask, TaskRunner, describe_error
from studio.ui.widgets.qt_gpu_panel import QtGpuPanel
from studio.ui.widgets.qt_log_panel import QtLogPanel
from studio.ui.widgets.qt_metrics_plots import QtMetricsPlots

# Run endings, plus the words of things that are not a run's ending: a start refused before any run existed,
# a merge or a saved adapter (which must not relabel the run: a stopped run stays stopped).
STATUS_COLOURS = {"completed": "#1b7f3b", "stopped": "#8a6d00", "failed": "#b00020", "running": "#1f4e9c",
                  "not started": "#8a6d00", "merging": "#1f4e9c", "merged": "#1b7f3b", "merge failed": "#b00020",
                  "saved": "#1b7f3b", "not saved": "#b00020", "deleted": "#8a6d00"}

_SETTING_NAMES = {"max_length": "max length", "per_device_train_batch_size": "batch size",
                  "gradient_checkpointing": "gradient checkpointing", "r": "LoRA rank", "quantization": "base weights"}


PREPARATION_PHASES = ("data", "libraries", "tokenizer", "tokenising", "model")
"""The `phase` of the log events a training process writes before its first step (run_training), in order."""


def retry_name(run_name: str) -> str:
    """demo → demo-retry; a retry of demo-retry (or of the folder demo-retry-2) is demo-retry again, which the
    run store numbers, never demo-retry-retry."""
    return re.sub(r"-retry(-\d+)?$", "", run_name) + "-retry"


def _describe_settings(settings: dict) -> str:
    parts = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append(f"{_SETTING_NAMES.get(key, key)} {value}")
    return ", ".join(parts)


class QtTrainingTab(QWidget):
    """Runs one training at a time through a QtTrainingSupervisor.

    Signals: `run_started(RunDirectory)`, `run_ended(RunDirectory, status, message)`,
    `config_adjusted(RunConfig)` when a retry changed the settings (the window keeps them).
    """

    run_started = Signal(object)
    run_ended = Signal(object, str, str)
    config_adjusted = Signal(object)

    #: Runs that trained at least this long announce their ending (tray message or status bar).
    NOTIFY_AFTER_S = 60.0

    def __init__(self, store: RunStore, telemetry: TelemetrySource | None = None, parent=None):
        super().__init__(parent)
        self.store = store
        self.supervisor: QtTrainingSupervisor | None = None
        self.run_dir: RunDirectory | None = None
        self.last_status: str | None = None
        self.last_failure: dict | None = None  # the `failed` event of the latest process, if any
        self.last_notification: tuple[str, str] | None = None
        self.tasks = TaskRunner(self)  # the merge
        self._tray: QSystemTrayIcon | None = None
        self._last_checkpoint_step: int | None = None
        self._evaluating: dict | None = None  # the last `evaluating` event of the evaluation under way

        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("startButton")
        self.start_button.setStyleSheet("QPushButton#startButton { font-weight: 600; padding: 6px 18px; }")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Save a checkpoint and the adapter, then stop. Press again to end it at once.")
        self.resume_button = QToolButton()
        self.resume_button.setText("Resume")
        self.resume_button.setToolTip("Continue this run from its latest checkpoint (the arrow picks another one): "
                                      "the step count, learning-rate schedule and optimizer state carry on.")
        self.resume_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.resume_menu = QMenu(self.resume_button)
        self.resume_menu.aboutToShow.connect(self._fill_resume_menu)
        self.resume_button.setMenu(self.resume_menu)
        self.resume_button.clicked.connect(lambda: self.resume())
        self.resume_button.setEnabled(False)

        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("The run's name: its folder under the runs folder and its row in the Runs view. "
                                  "Empty: the data's and the model's names. A name in use gets a suffix (-2).")
        self.name_edit.setMinimumWidth(160)
        self.name_edit.setMaximumWidth(280)
        self.naming: RunNaming | None = None

        self.status_label = QLabel("Ready. Press Start to train with the settings of the Config tab.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setFormat("no run")
        self.progress.setValue(0)
        self.detail_label = QLabel("")
        self.detail_label.setMinimumWidth(120)

        self.retry_button = QPushButton("Retry with this change")
        self.retry_button.setToolTip("Start a new run with the suggested change applied (the Config tab keeps it)")
        self.retry_button.clicked.connect(self.retry_with_suggestion)
        self.retry_button.setVisible(False)
        self.resume_changed_button = QPushButton("Resume with this change")
        self.resume_changed_button.setToolTip("Continue this run from its latest checkpoint with the suggested change "
                                              "applied: the steps already trained are kept")
        self.resume_changed_button.clicked.connect(self.resume_with_suggestion)
        self.resume_changed_button.setVisible(False)

        self.save_adapter_button = QPushButton("Save adapter to…")
        self.merge_button = QPushButton("Merge into base (16-bit)…")
        for button in (self.save_adapter_button, self.merge_button):
            button.setEnabled(False)
        self.save_adapter_button.clicked.connect(self._save_adapter)
        self.merge_button.clicked.connect(self._merge)

        self.metrics_plots = QtMetricsPlots()
        self.loss_plot = self.metrics_plots.loss_plot
        self.gpu_panel = QtGpuPanel(telemetry or detect_telemetry())
        self.gpu_panel.setMinimumWidth(330)
        self.log_panel = QtLogPanel()

        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("Name"))
        buttons.addWidget(self.name_edit)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.progress, stretch=1)
        buttons.addWidget(self.detail_label)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, stretch=1)
        status_row.addWidget(self.resume_changed_button, alignment=Qt.AlignmentFlag.AlignTop)
        status_row.addWidget(self.retry_button, alignment=Qt.AlignmentFlag.AlignTop)
        result_row = QHBoxLayout()
        result_row.addStretch(1)
        result_row.addWidget(self.save_adapter_button)
        result_row.addWidget(self.merge_button)

        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.metrics_plots)
        plots.addWidget(self.gpu_panel)
        plots.setStretchFactor(0, 3)
        plots.setStretchFactor(1, 1)
        plots.setSizes([780, 380])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(plots)
        main.addWidget(self.log_panel)
        main.setStretchFactor(0, 4)
        main.setStretchFactor(1, 1)
        main.setSizes([520, 130])
        self.splitter = main

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(status_row)
        layout.addWidget(main, stretch=1)
        layout.addLayout(result_row)

        self.stop_button.clicked.connect(self.stop)
        self._clock = QTimer(self)  # elapsed time moves on between steps (and while the model loads)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._refresh_progress)
        # Steps can come every few milliseconds; the progress text is rewritten at most 4 times a second.
        self._progress_timer = QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(250)
        self._progress_timer.timeout.connect(self._refresh_progress)

    # --- starting, resuming, re-attaching and stopping -------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.supervisor is not None and self.supervisor.running

    def start(self, config: RunConfig) -> RunDirectory | None:
        """Validate the config, create the run directory and start the training child."""
        if self.is_running:
            return None
        config = copy_config(config)
        from studio.core.data.issues import DataError
        from studio.core.train.preflight import check_run, refusal_line

        try:
            config.validate()
            check_run(config)  # the CLI's preflight: nothing the run would refuse becomes a failed run
        except ConfigError as error:
            self._set_status("not started", f"Cannot start: {error}")
            return None
        except DataError as error:
            line = refusal_line(error, skip_bad_rows="tick Skip bad rows when training on the Dataset tab")
            self._set_status("not started", f"Cannot start: {line}")
            return None
        wanted = config.name or default_run_name(config.data.train_file, config.model.name_or_path)
        run_dir = self.store.new_run(wanted, config.model.name_or_path)
        config.name = run_dir.name
        save_config(config, run_dir.config_path)
        self._attach(run_dir, QtTrainingSupervisor(run_dir, parent=self))
        if (note := renamed_note(wanted, run_dir)) is not None:
            self._set_status("running", f"{note} Starting run {run_dir.name}…")
        return run_dir

    def bind_naming(self, naming: RunNaming) -> None:
        """Show and edit the draft's run name in the Name field (the window's one RunNaming)."""
        self.naming = naming
        self.name_edit.textEdited.connect(naming.type)
        naming.draft.subscribe(lambda _change: self._show_name())
        self._show_name()

    def _show_name(self) -> None:
        naming = self.naming
        if naming is None:
            return
        if self.name_edit.text() != naming.name:
            self.name_edit.setText(naming.name)
        self.name_edit.setPlaceholderText(naming.default)

    def resume(self, run_dir: RunDirectory | None = None, checkpoint: Path | None = None) -> bool:
        """Continue a run (default: the one shown) from a checkpoint (default: its latest) in a new process."""
        run_dir = run_dir or self.run_dir
        if self.is_running or run_dir is None:
            return False
        if (busy := run_dir.busy_message()) is not None:
            # A second writer would interleave its events with the live run's and set its checkpoints aside.
            self._set_status("not started", f"Cannot resume: {busy}")
            return False
        if checkpoint is None and run_dir.latest_checkpoint() is None:
            self._set_status("failed", f"Run {run_dir.name} has no checkpoint to resume from.")
            return False
        self._attach(run_dir, QtTrainingSupervisor(run_dir, resume=True, resume_from=checkpoint, parent=self),
                     verb="Resuming")
        return True

    def reattach(self, run_dir: RunDirectory) -> bool:
        """Show and supervise a run whose training process is alive (kept training after a window closed)."""
        if self.is_running:
            return False
        supervisor = QtTrainingSupervisor.attach(run_dir, parent=self)
        if supervisor is None:
            return False
        self._attach(run_dir, supervisor, verb="Re-attached to")
        return True

    def _attach(self, run_dir: RunDirectory, supervisor: QtTrainingSupervisor, *, verb: str = "Starting") -> None:
        self.run_dir, self.supervisor = run_dir, supervisor
        self.last_status, self.last_failure, self._last_checkpoint_step = None, None, None
        self._evaluating = None
        self.metrics_plots.reset()  # the supervisor replays the whole events file, earlier processes too
        self.gpu_panel.clear()
        self.log_panel.set_path(run_dir.log_path)
        self.log_panel.start()
        supervisor.event.connect(self.handle_event)
        supervisor.ended.connect(self._on_ended)
        supervisor.start()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self.resume_button.setEnabled(False)
        self.retry_button.setVisible(False)
        self.resume_changed_button.setVisible(False)
        self.save_adapter_button.setEnabled(False)
        self.merge_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy until the run reports its step count
        self.progress.setFormat("starting…")
        self.detail_label.setText("")
        self._set_status("running", f"{verb} run {run_dir.name}…")
        window = self.window()
        if isinstance(window, QMainWindow):
            window.statusBar().clearMessage()  # an earlier run's ending notice would hide the news of this one
        if supervisor.pid:
            self.gpu_panel.set_pid(supervisor.pid)
        self.gpu_panel.start()
        self._clock.start()
        self.run_started.emit(run_dir)

    def follow_rename(self, old: Path, new: Path) -> None:
        """The run shown here was renamed (never one training: the Runs view refuses that)."""
        if self.run_dir is not None and not self.is_running and self.run_dir.path == Path(old):
            self.run_dir = RunDirectory(Path(new))

    def forget_runs(self, folders: list[Path]) -> None:
        """Runs deleted in the Runs view: the one shown here (if not training) is shown no more."""
        if self.run_dir is None or self.is_running or self.run_dir.path not in set(map(Path, folders)):
            return
        name = self.run_dir.name
        self.run_dir = None
        self.metrics_plots.reset()
        self.gpu_panel.clear()
        for button in (self.save_adapter_button, self.merge_button, self.resume_button):
            button.setEnabled(False)
        self.retry_button.setVisible(False)
        self.resume_changed_button.setVisible(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.detail_label.setText("")
        self._set_status("deleted", f"Run {name} was deleted. Start training for a new run.")

    def stop(self) -> None:
        """First press: save and stop; second press: kill."""
        if not self.is_running:
            return
        if not self.supervisor.stopping:
            self.supervisor.request_stop()
            self.stop_button.setText("Kill now")
            self._set_status("running", "Stopping: saving a checkpoint and the adapter…")
        else:
            self.supervisor.kill()

    # --- events from the run -----------------------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        self.metrics_plots.feed(event)
        kind = event["event"]
        if event.get("pid") is not None:
            self.last_failure = None  # a new process: an earlier one's failure is history
            if self.supervisor is not None and event["pid"] == self.supervisor.pid:
                # Its first event (before the libraries, the data and the model load, a minute or more): the
                # memory panel follows the process from then on, not from its first step.
                self.gpu_panel.set_pid(event["pid"])
        if kind == "evaluating":
            self._evaluating = event
            self._refresh_progress()
            return
        if self._evaluating is not None and kind != "log":
            self._evaluating = None  # the evaluation ended (its result, the next step, a save or the end)
            self._refresh_progress()
        if kind == "log":
            if not (self.supervisor is not None and self.supervisor.stopping):
                message = event.get("message", "")
                if event.get("phase") in PREPARATION_PHASES:
                    number = PREPARATION_PHASES.index(event["phase"]) + 1
                    message = f"Preparing the run ({number} of {len(PREPARATION_PHASES)}): {message}"
                self._set_status("running", message)
        elif kind == "started":
            metrics = self.metrics_plots.metrics
            start = event.get("start_step") or 0
            if self._last_checkpoint_step is not None and self._last_checkpoint_step > start:
                # Resumed from an older checkpoint: the later saves were of the steps retrained now.
                self._last_checkpoint_step = start
            if self.supervisor is not None and self.supervisor.pid:
                self.gpu_panel.set_pid(self.supervisor.pid)
            if metrics.total_steps:
                self.progress.setRange(0, metrics.total_steps)
                self.progress.setValue(min(metrics.start_step, metrics.total_steps))
            resumed = f" from step {metrics.start_step}" if metrics.start_step else ""
            self._set_status("running", f"Training {self.run_dir.name if self.run_dir else ''}{resumed}")
            self._refresh_progress()
        elif kind == "step":
            if not self._progress_timer.isActive():
                self._progress_timer.start()
        elif kind == "checkpoint":
            self._last_checkpoint_step = event.get("step")
            self._refresh_progress()
        elif kind == "eval_scores":
            self._refresh_progress()
        elif kind == "failed":
            self.last_failure = event

    def _refresh_progress(self) -> None:
        self._progress_timer.stop()
        metrics = self.metrics_plots.metrics
        details = []
        if metrics.final_loss is not None:
            details.append(f"loss {metrics.final_loss:.4f}")
        if metrics.eval_loss:
            details.append(f"eval {metrics.eval_loss[-1]:.4f}")
        if scores := self.metrics_plots.scores.points:
            details.append(f"held-out {scores[-1].label}")
        if self._last_checkpoint_step is not None:
            details.append(f"saved at {self._last_checkpoint_step}")
        self.detail_label.setText(" · ".join(details))
        if not metrics.total_steps:
            if self.is_running:
                self.progress.setFormat(f"starting… {format_duration(metrics.elapsed(time.time()))}")
            return
        step = metrics.current_step
        self.progress.setValue(min(step, metrics.total_steps))
        parts = [f"step {step}/{metrics.total_steps}"]
        if metrics.current_epoch is not None:
            parts.append(f"epoch {metrics.current_epoch:.2f}")
        live = self.is_running and metrics.ending is None
        parts.append(format_duration(metrics.elapsed(time.time() if live else None)))
        eta = metrics.eta()
        if eta is not None and live:
            parts.append(f"ETA {format_duration(eta)}")
        if self._evaluating is not None and live:
            done, total = self._evaluating.get("done"), self._evaluating.get("total")
            parts.append(f"evaluating {done}/{total} batches" if total
                         else f"evaluating, {done} batch" + ("" if done == 1 else "es"))
        self.progress.setFormat(" · ".join(parts))

    def _on_ended(self, status: str, message: str) -> None:
        self._clock.stop()
        self._progress_timer.stop()
        self.gpu_panel.end_run()
        self.log_panel.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stop")
        metrics = self.metrics_plots.metrics
        self.progress.setRange(0, max(1, metrics.total_steps or 1))
        self.progress.setValue(min(metrics.current_step, self.progress.maximum()))
        has_adapter = self.run_dir is not None and (self.run_dir.adapter_dir / "adapter_config.json").is_file()
        self.save_adapter_button.setEnabled(has_adapter and status != "failed")
        self.merge_button.setEnabled(has_adapter and status != "failed")
        can_resume = status in ("stopped", "failed") and self.run_dir is not None and bool(self.run_dir.checkpoints())
        self.resume_button.setEnabled(can_resume)
        name = self.run_dir.name if self.run_dir else "run"
        duration = format_duration(metrics.elapsed())
        if status == "failed":
            self.progress.setFormat(f"failed at step {metrics.current_step} · {duration}")
            self._set_status("failed", self._failure_text(name, message), rich_tail=self._failure_hint())
            self._offer_retry()
        elif status == "stopped":
            self.progress.setFormat(f"stopped at step {metrics.current_step} · {duration}")
            self._set_status("stopped", f"Run {name} stopped at step {metrics.current_step}; checkpoint and adapter "
                                        "saved. " + (f"{message} " if message else "")
                                        + "Resume continues it; the Chat tab talks to it.")
        else:
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat(f"completed · {metrics.current_step} steps · {duration}")
            self._set_status("completed", f"Run {name} completed in {duration}; its adapter loads. "
                                          + (f"{message} " if message else "") + "Open the Chat tab to talk to it.")
        self.last_status = status
        if metrics.elapsed() >= self.NOTIFY_AFTER_S:
            self._notify(f"Training {status}", f"Run {name}: {status} after {duration}"
                         + (f" — {message}" if status == "failed" and message else ""))
        self.run_ended.emit(self.run_dir, status, message)

    def _failure_text(self, name: str, message: str) -> str:
        failure = self.last_failure or {}
        kind = failure.get("kind")
        if kind == "oom":
            return (f"Run {name} ran out of memory ({failure.get('message', message)}). "
                    f"Settings: {_describe_settings(failure.get('settings') or {})}.")
        if kind in ("data", "config"):
            return f"Run {name} failed ({kind}): {failure.get('message') or message}"
        return f"Run {name} failed: {failure.get('message') or message}"

    def _failure_hint(self) -> str:
        failure = self.last_failure or {}
        hint = failure.get("hint") or ""
        if self.run_dir is not None and self.run_dir.checkpoints() and failure.get("kind") not in ("data", "config"):
            hint += f" Resume continues from {self.run_dir.latest_checkpoint().name}."
        return hint.strip()

    # --- an out-of-memory failure: one-click retry -------------------------------------------------------------
    def _offer_retry(self) -> None:
        failure = self.last_failure or {}
        suggestion = failure.get("suggestion")
        if failure.get("kind") == "oom" and suggestion:
            self.retry_button.setText(f"Retry: {suggestion}")
            self.retry_button.setVisible(True)
            checkpoint = self.run_dir.latest_checkpoint() if self.run_dir is not None else None
            if failure.get("suggestion_resumable") and checkpoint is not None:
                self.resume_changed_button.setText(f"Resume from {checkpoint.name} and {suggestion}")
                self.resume_changed_button.setVisible(True)

    def retry_config(self) -> RunConfig | None:
        """The failed run's config with the memory suggestion applied (None unless the run ran out of memory)."""
        from studio.core.train.failures import oom_retry_config

        if self.run_dir is None or (self.last_failure or {}).get("kind") != "oom":
            return None
        try:
            config = load_config(self.run_dir.config_path)
        except ConfigError as error:
            self._set_status("failed", f"Cannot retry: {error}")
            return None
        retry = oom_retry_config(config)
        if retry is None:
            return None
        adjusted, _ = retry
        adjusted.name = retry_name(self.run_dir.name)
        return adjusted

    def retry_with_suggestion(self) -> RunDirectory | None:
        """Start a new run with the suggested change; the window's config takes the change too."""
        adjusted = self.retry_config()
        if adjusted is None or self.is_running:
            return None
        self.config_adjusted.emit(copy_config(adjusted))
        return self.start(adjusted)

    def resume_with_suggestion(self) -> bool:
        """Continue the run that ran out of memory from its latest checkpoint with the memory saving applied
        (written into its run.toml: the run goes on with it); the window's config takes the change too."""
        from studio.core.train.failures import oom_retry_config

        if self.run_dir is None or self.is_running or not (self.last_failure or {}).get("suggestion_resumable"):
            return False
        try:
            retry = oom_retry_config(load_config(self.run_dir.config_path))
        except ConfigError as error:
            self._set_status("failed", f"Cannot resume: {error}")
            return False
        if retry is None or not retry[1].resumable:
            return False
        adjusted, _ = retry
        save_config(adjusted, self.run_dir.config_path)
        self.config_adjusted.emit(copy_config(adjusted))
        return self.resume()

    # --- showing the run ------------------------------------------------------------------------------------------
    def _set_status(self, status: str, text: str, *, rich_tail: str = "") -> None:
        colour = STATUS_COLOURS.get(status, "#333")
        tail = f"<br><b>What to do:</b> {_escape(rich_tail)}" if rich_tail else ""
        self.status_label.setText(f"<span style='color:{colour}; font-weight:600'>{status.upper()}</span>"
                                  f" &nbsp;{_escape(text)}{tail}")

    def _fill_resume_menu(self) -> None:
        self.resume_menu.clear()
        if self.run_dir is None:
            return
        checkpoints = self.run_dir.checkpoints()
        for checkpoint in reversed(checkpoints):
            action = self.resume_menu.addAction(f"From {checkpoint.name}")
            action.triggered.connect(lambda _=False, c=checkpoint: self.resume(checkpoint=c))
        if not checkpoints:
            self.resume_menu.addAction("No checkpoint yet").setEnabled(False)

    def _notify(self, title: str, text: str) -> None:
        """A desktop notification where the desktop has a tray; the window's status bar otherwise."""
        self.last_notification = (title, text)
        if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
            if self._tray is None:
                icon = QApplication.windowIcon()
                if icon.isNull():
                    icon = self.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)
                self._tray = QSystemTrayIcon(icon, self)
            self._tray.show()
            self._tray.showMessage(title, text)
            return
        window = self.window()
        if isinstance(window, QMainWindow):
            window.statusBar().showMessage(f"{title}: {text}", 60_000)

    # --- results ----------------------------------------------------------------------------------------------
    def _save_adapter(self) -> None:
        if self.run_dir is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Save the adapter into folder")
        if folder:
            self.save_adapter_to(Path(folder) / f"{self.run_dir.name}-adapter")

    def save_adapter_to(self, target: Path) -> Path | None:
        """Copy the run's adapter folder (PEFT standard, with tokenizer, chat template and model card) — the
        Export dialog's adapter export, which never replaces a folder of the user's own files."""
        from studio.core.export.adapter import export_adapter
        from studio.core.export.staging import ExportError

        try:
            written = export_adapter(self.run_dir.path, target)
        except (ExportError, OSError) as error:
            self._set_status("not saved", str(error))
            return None
        self._set_status("saved", f"Run {self.run_dir.name}: adapter saved to {written}")
        return written

    def _merge(self) -> None:
        if self.run_dir is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Write the merged model into folder")
        if folder:
            from studio.core.export.staging import next_free_name

            target = Path(folder) / f"{self.run_dir.name}-merged"
            # A new folder beside an earlier merge (NAME-merged-2): the button never replaces one.
            self.merge_to(next_free_name(target, is_dir=True) if target.exists() else target)

    def merge_to(self, target: Path) -> BackgroundTask:
        """Merge in a background thread; the status line says when it is done."""
        from studio.core.models.source import ModelLoadError
        from studio.core.export.staging import ExportError
        from studio.core.export.merge import merge_adapter

        self.merge_button.setEnabled(False)
        adapter, name = self.run_dir.adapter_dir, self.run_dir.name
        return self.tasks.start(
            lambda state: merge_adapter(adapter, target, task=state),
            on_progress=lambda fraction, message: self._set_status("merging", message),
            on_result=lambda out: self._set_status("merged", f"Run {name}: merged model written to {out}"),
            on_error=lambda error: self._set_status("merge failed", f"Run {name}: {describe_error(error)}"),
            on_done=lambda: self.merge_button.setEnabled(True),
            expected_errors=(ModelLoadError, ExportError, OSError), name="merge")

    # --- closing ---------------------------------------------------------------------------------------------
    def confirm_close(self) -> bool:
        """Ask what to do with a running run before the window closes; False cancels the close."""
        if not self.is_running:
            return True
        choice = self.ask_close_choice()
        if choice == "stop":
            self._stop_and_wait()
            return True
        if choice == "keep":
            self.detach()
            return True
        return False

    def _stop_and_wait(self) -> None:
        """Stop the run and wait for its save, with the window painting and a way to give up waiting.

        Waiting on the GUI thread alone would freeze the window for as long as the save takes (model load and
        save of a large model: tens of seconds) with no sign of life.
        """
        supervisor = self.supervisor
        supervisor.request_stop()
        dialog = QProgressDialog("Stopping the run: saving a checkpoint and the adapter…", "Kill now", 0, 0, self)
        dialog.setWindowTitle("Stopping training")
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(300)
        dialog.canceled.connect(supervisor.kill)
        while not supervisor.wait(50):
            QApplication.processEvents()
        dialog.close()

    def ask_close_choice(self) -> str:
        """'stop', 'keep' or 'cancel', asked in a dialog."""
        box = QMessageBox(QMessageBox.Icon.Question, "Training in progress",
                          "A training run is still going. Stop it before quitting? Stopping saves a "
                          "checkpoint and the adapter; you can resume later. A run kept training shows "
                          "up again, live, the next time you open the studio.", parent=self)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Keep training in the background", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return {id(stop): "stop", id(keep): "keep"}.get(id(box.clickedButton()), "cancel")

    def detach(self) -> None:
        """Leave the child running (its events keep going to the run directory) and stop watching it."""
        if self.supervisor is not None:
            self.supervisor.detach()
            self.supervisor.event.disconnect(self.handle_event)
            self.supervisor.ended.disconnect(self._on_ended)
            self.supervisor.wait(2000)
        self._clock.stop()
        self.log_panel.stop()
        self.gpu_panel.stop()

    def shutdown(self) -> None:
        self.tasks.shutdown()  # a merge under way gets up to 30 s to finish its folder before the window goes
        self._clock.stop()
        self.log_panel.stop()
        self.gpu_panel.stop()
        if self._tray is not None:
            self._tray.hide()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
