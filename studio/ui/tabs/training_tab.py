"""Training tab: Start / Stop / Resume, progress, live curves, GPU memory, the run's log, and the ending.

A view of the Training session (`studio.core.sessions.training.TrainingSession`): Start hands the config to the
session (validated and preflight-checked once, its run folder and run.toml written once), the session folds the
run's events into the series the plots draw and into the status, failure and retry texts shown here. One run at a
time goes through a QtTrainingSupervisor, which relays events.jsonl from its first line, so a fresh run, a resumed
run and a run re-attached after the window was reopened are all shown by the same code path.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMainWindow, QMenu, QMessageBox, QProgressBar,
    QProgressDialog, QPushButton, QSplitter, QStyle, QSystemTrayIcon, QToolButton, QVBoxLayout, QWidget,
)

from studio.core.sessions.run_name import RunNaming
from studio.core.sessions.training import RunConfig, RunDirectory, TrainingSession, default_telemetry
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


class QtTrainingTab(QWidget):
    """Runs one training at a time through a QtTrainingSupervisor, shown from its TrainingSession.

    Signals: `run_started(RunDirectory)`, `run_ended(RunDirectory, status, message)`,
    `config_adjusted(RunConfig)` when a retry changed the settings (the window keeps them).
    """

    run_started = Signal(object)
    run_ended = Signal(object, str, str)
    config_adjusted = Signal(object)

    #: Runs that trained at least this long announce their ending (tray message or status bar).
    NOTIFY_AFTER_S = 60.0

    def __init__(self, store, telemetry=None, parent=None, *, session: TrainingSession | None = None):
        super().__init__(parent)
        self.session = session if session is not None else TrainingSession(store)
        self.store = store
        self.supervisor: QtTrainingSupervisor | None = None
        self.last_notification: tuple[str, str] | None = None
        self.tasks = TaskRunner(self)  # the merge
        self._tray: QSystemTrayIcon | None = None

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

        self.status_label = QLabel("")
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

        self.metrics_plots = QtMetricsPlots(self.session.series)
        self.loss_plot = self.metrics_plots.loss_plot
        self.gpu_panel = QtGpuPanel(telemetry or default_telemetry(), readings=self.session.memory)
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
        self.session.subscribe(self._show_status)
        self.session.run_started.append(self.run_started.emit)
        self.session.run_ended.append(self._announce_end)
        self._show_status()

    # --- the session's state, read here (tests, the window) --------------------------------------------------------
    @property
    def run_dir(self) -> RunDirectory | None:
        return self.session.run_dir

    @run_dir.setter
    def run_dir(self, run_dir: RunDirectory | None) -> None:  # the run shown, as after it ended (tests)
        self.session.run_dir = run_dir

    @property
    def last_status(self) -> str | None:
        return self.session.last_status

    @property
    def is_running(self) -> bool:
        return self.supervisor is not None and self.supervisor.running

    # --- starting, resuming, re-attaching and stopping -------------------------------------------------------
    def start(self, config: RunConfig) -> RunDirectory | None:
        """Start a run of `config` (the session validates it, checks it and makes its folder)."""
        if self.is_running:
            return None
        run_dir = self.session.start(config)
        if run_dir is not None:
            self._attach(run_dir, self.session.supervisor(run_dir))
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
        if self.is_running or not self.session.can_resume(run_dir, checkpoint):
            return False
        self._attach(run_dir, self.session.supervisor(run_dir, resume=True, resume_from=checkpoint), verb="Resuming")
        return True

    def reattach(self, run_dir: RunDirectory) -> bool:
        """Show and supervise a run whose training process is alive (kept training after a window closed)."""
        if self.is_running:
            return False
        core = self.session.attachable(run_dir)
        if core is None:
            return False
        self._attach(run_dir, core, verb="Re-attached to")
        return True

    def _attach(self, run_dir: RunDirectory, core, *, verb: str = "Starting") -> None:
        self.supervisor = supervisor = QtTrainingSupervisor(core, parent=self)
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
        window = self.window()
        if isinstance(window, QMainWindow):
            window.statusBar().clearMessage()  # an earlier run's ending notice would hide the news of this one
        if supervisor.pid:
            self.gpu_panel.set_pid(supervisor.pid)
        self.gpu_panel.start()
        self._clock.start()
        self.session.began(run_dir, verb)  # the plots empty: the supervisor replays the whole events file

    def follow_rename(self, old: Path, new: Path) -> None:
        """The run shown here was renamed (never one training: the Runs view refuses that)."""
        if not self.is_running:
            self.session.follow_rename(old, new)

    def forget_runs(self, folders: list[Path]) -> None:
        """Runs deleted in the Runs view: the one shown here (if not training) is shown no more."""
        if self.is_running or not self.session.forget(folders):
            return
        self.gpu_panel.clear()
        for button in (self.save_adapter_button, self.merge_button, self.resume_button):
            button.setEnabled(False)
        self.retry_button.setVisible(False)
        self.resume_changed_button.setVisible(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.detail_label.setText("")

    def stop(self) -> None:
        """First press: save and stop; second press: kill."""
        if not self.is_running:
            return
        if not self.supervisor.stopping:
            self.supervisor.request_stop()
            self.stop_button.setText("Kill now")
            self.session.stop_requested()
        else:
            self.supervisor.kill()

    # --- events from the run -----------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        event = self.session.feed(event)
        supervisor_pid = self.supervisor.pid if self.supervisor is not None else None
        if event.pid is not None and event.pid == supervisor_pid:
            # Its first event (before the libraries, the data and the model load, a minute or more): the memory
            # panel follows the process from then on, not from its first step.
            self.gpu_panel.set_pid(event.pid)
        if event.name == "step":
            if not self._progress_timer.isActive():
                self._progress_timer.start()
            return
        if event.name == "log":
            return  # the status line says it; the clock moves the progress text on
        if event.name == "started":
            if supervisor_pid:
                self.gpu_panel.set_pid(supervisor_pid)
            metrics = self.session.series.metrics
            if metrics.total_steps:
                self.progress.setRange(0, metrics.total_steps)
                self.progress.setValue(min(metrics.start_step, metrics.total_steps))
        self._refresh_progress()

    def _refresh_progress(self) -> None:
        self._progress_timer.stop()
        self.detail_label.setText(self.session.details_text())
        metrics = self.session.series.metrics
        if metrics.total_steps:
            self.progress.setValue(min(metrics.current_step, metrics.total_steps))
        if (text := self.session.progress_text(time.time(), running=self.is_running)) is not None:
            self.progress.setFormat(text)

    def _on_ended(self, status: str, message: str) -> None:
        self._clock.stop()
        self._progress_timer.stop()
        self.gpu_panel.end_run()
        self.log_panel.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stop")
        session, metrics = self.session, self.session.series.metrics
        self.progress.setRange(0, max(1, metrics.total_steps or 1))
        self.progress.setValue(min(metrics.current_step, self.progress.maximum()))
        self.save_adapter_button.setEnabled(session.has_adapter and status != "failed")
        self.merge_button.setEnabled(session.has_adapter and status != "failed")
        self.resume_button.setEnabled(status in ("stopped", "failed") and bool(session.checkpoints))
        if status == "failed":
            retry, resume = session.retry_offer()
            for button, text in ((self.retry_button, retry), (self.resume_changed_button, resume)):
                if text:
                    button.setText(text)
                button.setVisible(bool(text))
        session.ended(status, message)  # the status, then the ending announced (_announce_end)

    def _announce_end(self, run_dir: RunDirectory | None, status: str, message: str) -> None:
        if status == "completed":
            self.progress.setValue(self.progress.maximum())
        self.progress.setFormat(self.session.closing_text)
        if self.session.series.metrics.elapsed() >= self.NOTIFY_AFTER_S:
            self._notify(*self.session.notice(status, message))
        self.run_ended.emit(run_dir, status, message)

    # --- an out-of-memory failure: one-click retry -------------------------------------------------------------
    def retry_config(self) -> RunConfig | None:
        """The failed run's config with the memory suggestion applied (None unless the run ran out of memory)."""
        return self.session.retry_config()

    def retry_with_suggestion(self) -> RunDirectory | None:
        """Start a new run with the suggested change; the window's config takes the change too."""
        adjusted = None if self.is_running else self.retry_config()
        if adjusted is None:
            return None
        self.config_adjusted.emit(adjusted)
        return self.start(adjusted)

    def resume_with_suggestion(self) -> bool:
        """Continue the run that ran out of memory from its latest checkpoint with the memory saving applied
        (written into its run.toml: the run goes on with it); the window's config takes the change too."""
        adjusted = None if self.is_running else self.session.resume_config()
        if adjusted is None:
            return False
        self.config_adjusted.emit(adjusted)
        return self.resume()

    # --- showing the run ------------------------------------------------------------------------------------------
    def _show_status(self) -> None:
        status = self.session.status
        colour = STATUS_COLOURS.get(status.word, "#333")
        tail = f"<br><b>What to do:</b> {_escape(status.hint)}" if status.hint else ""
        word = f"<span style='color:{colour}; font-weight:600'>{status.word.upper()}</span> &nbsp;"
        self.status_label.setText((word if status.word != "ready" else "") + _escape(status.text) + tail)

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
        """The Export dialog's adapter export of the run shown (the status says where it went)."""
        return self.session.save_adapter(target)

    def _merge(self) -> None:
        if self.run_dir is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Write the merged model into folder")
        if folder:
            self.merge_to(self.session.merge_target(Path(folder)))

    def merge_to(self, target: Path) -> BackgroundTask:
        """Merge in a background thread; the status line says when it is done."""
        self.merge_button.setEnabled(False)
        name, said = self.run_dir.name, self.session.merge_said
        merge, expected = self.session.merge_work(target)
        return self.tasks.start(
            lambda state: merge(state), on_progress=lambda fraction, message: said("merging", message),
            on_result=lambda out: said("merged", f"Run {name}: merged model written to {out}"),
            on_error=lambda error: said("merge failed", f"Run {name}: {describe_error(error)}"),
            on_done=lambda: self.merge_button.setEnabled(True), expected_errors=expected, name="merge")

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
