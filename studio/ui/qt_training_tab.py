"""Training tab: Start/Stop, progress, the live loss curve and GPU memory, and what to do with the result."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog, QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from studio.core.config import ConfigError, RunConfig, copy_config, save_config
from studio.core.gpu import TelemetrySource, detect_telemetry
from studio.core.run_store import RunDirectory, RunStore
from studio.ui.qt_training_supervisor import QtTrainingSupervisor
from studio.ui.qt_workers import QtFunctionWorker
from studio.ui.widgets.qt_gpu_panel import QtGpuPanel
from studio.ui.widgets.qt_loss_plot import QtLossPlot

STATUS_COLOURS = {"completed": "#1b7f3b", "stopped": "#8a6d00", "failed": "#b00020", "running": "#1f4e9c"}


def _format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class QtTrainingTab(QWidget):
    """Runs one training at a time through a QtTrainingSupervisor.

    Signals: `run_started(RunDirectory)`, `run_ended(RunDirectory, status, message)`.
    """

    run_started = Signal(object)
    run_ended = Signal(object, str, str)

    def __init__(self, store: RunStore, telemetry: TelemetrySource | None = None, parent=None):
        super().__init__(parent)
        self.store = store
        self.supervisor: QtTrainingSupervisor | None = None
        self.run_dir: RunDirectory | None = None
        self.last_status: str | None = None
        self._total_steps: int | None = None
        self._start_step = 0
        self._started_at: float | None = None
        self._first_step_at: float | None = None
        self._worker: QtFunctionWorker | None = None

        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("startButton")
        self.start_button.setStyleSheet("QPushButton#startButton { font-weight: 600; padding: 6px 18px; }")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Save a checkpoint and the adapter, then stop. Press again to end it at once.")
        self.status_label = QLabel("Ready. Press Start to train with the settings of the Config tab.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setFormat("no run")
        self.progress.setValue(0)
        self.detail_label = QLabel("")

        self.save_adapter_button = QPushButton("Save adapter to…")
        self.merge_button = QPushButton("Merge into base (16-bit)…")
        for button in (self.save_adapter_button, self.merge_button):
            button.setEnabled(False)
        self.save_adapter_button.clicked.connect(self._save_adapter)
        self.merge_button.clicked.connect(self._merge)

        self.loss_plot = QtLossPlot()
        self.gpu_panel = QtGpuPanel(telemetry or detect_telemetry())

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, stretch=1)
        buttons.addWidget(self.detail_label)
        result_row = QHBoxLayout()
        result_row.addStretch(1)
        result_row.addWidget(self.save_adapter_button)
        result_row.addWidget(self.merge_button)

        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.gpu_panel)
        plots.setSizes([640, 420])

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(plots, stretch=1)
        layout.addLayout(result_row)

        self.stop_button.clicked.connect(self.stop)

    # --- starting and stopping ----------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.supervisor is not None and self.supervisor.isRunning()

    def start(self, config: RunConfig) -> RunDirectory | None:
        """Validate the config, create the run directory and start the training child."""
        if self.is_running:
            return None
        config = copy_config(config)
        try:
            config.validate()
        except ConfigError as error:
            self._set_status("failed", f"Cannot start: {error}")
            return None
        run_dir = self.store.new_run(config.name, config.model.name_or_path)
        config.name = run_dir.name
        save_config(config, run_dir.config_path)
        self._attach(run_dir, QtTrainingSupervisor(run_dir, parent=self))
        return run_dir

    def _attach(self, run_dir: RunDirectory, supervisor: QtTrainingSupervisor) -> None:
        self.run_dir, self.supervisor = run_dir, supervisor
        self.loss_plot.clear()
        self.gpu_panel.clear()
        self._total_steps, self._start_step, self._first_step_at = None, 0, None
        self._started_at = time.monotonic()
        supervisor.event.connect(self.handle_event)
        supervisor.ended.connect(self._on_ended)
        supervisor.start()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self.save_adapter_button.setEnabled(False)
        self.merge_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy until the run reports its step count
        self.progress.setFormat("starting…")
        self._set_status("running", f"Starting run {run_dir.name}…")
        self.gpu_panel.start()
        self.run_started.emit(run_dir)

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

    # --- events from the run ---------------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "log":
            self._set_status("running", event.get("message", ""))
        elif kind == "started":
            self._total_steps = event.get("total_steps") or None
            self._start_step = event.get("start_step") or 0
            if self.supervisor is not None and self.supervisor.pid:
                self.gpu_panel.set_pid(event.get("pid") or self.supervisor.pid)
            if self._total_steps:
                self.progress.setRange(0, self._total_steps)
                self.progress.setValue(self._start_step)
            self._set_status("running", f"Training {self.run_dir.name if self.run_dir else ''}")
        elif kind == "step":
            self.loss_plot.add_train_point(event["step"], event["loss"])
            self._update_progress(event)
        elif kind == "eval":
            self.loss_plot.add_eval_point(event["step"], event["eval_loss"])
        elif kind == "checkpoint":
            self.detail_label.setText(f"checkpoint at step {event['step']}")

    def _update_progress(self, event: dict) -> None:
        step = event["step"]
        now = time.monotonic()
        if self._first_step_at is None:
            self._first_step_at = (now, step)
        if self._total_steps:
            self.progress.setValue(min(step, self._total_steps))
            first_time, first_step = self._first_step_at
            done = step - first_step
            eta = ""
            if done > 0:
                remaining = (self._total_steps - step) * (now - first_time) / done
                eta = f" · ETA {_format_duration(remaining)}"
            elapsed = _format_duration(now - (self._started_at or now))
            self.progress.setFormat(f"step {step}/{self._total_steps} · epoch {event.get('epoch', 0):.2f}"
                                    f" · {elapsed}{eta}")
        self.detail_label.setText(f"loss {event['loss']:.4f}")

    def _on_ended(self, status: str, message: str) -> None:
        self.gpu_panel.set_pid(None)
        self.gpu_panel.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stop")
        self.progress.setRange(0, max(1, self._total_steps or 1))
        self.progress.setFormat(status)
        has_adapter = self.run_dir is not None and (self.run_dir.adapter_dir / "adapter_config.json").is_file()
        self.save_adapter_button.setEnabled(has_adapter and status != "failed")
        self.merge_button.setEnabled(has_adapter and status != "failed")
        name = self.run_dir.name if self.run_dir else "run"
        if status == "failed":
            self._set_status("failed", f"Run {name} failed: {message}")
        elif status == "stopped":
            self._set_status("stopped", f"Run {name} stopped; checkpoint and adapter saved. "
                                        "Open the Chat tab to talk to it.")
        else:
            self.progress.setValue(self.progress.maximum())
            self._set_status("completed", f"Run {name} completed. Open the Chat tab to talk to it.")
        self.last_status = status
        self.run_ended.emit(self.run_dir, status, message)

    def _set_status(self, status: str, text: str) -> None:
        colour = STATUS_COLOURS.get(status, "#333")
        self.status_label.setText(f"<span style='color:{colour}; font-weight:600'>{status.upper()}</span>"
                                  f" &nbsp;{_escape(text)}")

    # --- results ----------------------------------------------------------------------------------------------
    def _save_adapter(self) -> None:
        if self.run_dir is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Save the adapter into folder")
        if folder:
            self.save_adapter_to(Path(folder) / f"{self.run_dir.name}-adapter")

    def save_adapter_to(self, target: Path) -> Path:
        """Copy the run's adapter folder (PEFT standard, with tokenizer and chat template)."""
        import shutil

        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.run_dir.adapter_dir, target)
        self._set_status(self.last_status or "completed", f"Adapter saved to {target}")
        return target

    def _merge(self) -> None:
        if self.run_dir is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Write the merged model into folder")
        if folder:
            self.merge_to(Path(folder) / f"{self.run_dir.name}-merged")

    def merge_to(self, target: Path) -> QtFunctionWorker:
        """Merge in a background thread; the status line says when it is done."""
        from studio.core.chat import ModelLoadError
        from studio.core.merge import merge_adapter

        self.merge_button.setEnabled(False)
        worker = QtFunctionWorker(merge_adapter, self.run_dir.adapter_dir, target, pass_progress=True,
                                  expected_errors=(ModelLoadError, OSError), parent=self)
        worker.progress.connect(lambda message: self._set_status("running", message))
        worker.succeeded.connect(lambda out: self._set_status("completed", f"Merged model written to {out}"))
        worker.failed.connect(lambda message: self._set_status("failed", f"Merge failed: {message}"))
        worker.finished.connect(lambda: self.merge_button.setEnabled(True))
        self._worker = worker
        worker.start()
        return worker

    def confirm_close(self) -> bool:
        """Ask what to do with a running run before the window closes; False cancels the close."""
        if not self.is_running:
            return True
        choice = self.ask_close_choice()
        if choice == "stop":
            self.supervisor.request_stop()
            self.supervisor.wait()
            return True
        if choice == "keep":
            self.detach()
            return True
        return False

    def ask_close_choice(self) -> str:
        """'stop', 'keep' or 'cancel', asked in a dialog."""
        box = QMessageBox(QMessageBox.Icon.Question, "Training in progress",
                          "A training run is still going. Stop it before quitting? Stopping saves a "
                          "checkpoint and the adapter; you can resume later.", parent=self)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Keep training in the background", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return {id(stop): "stop", id(keep): "keep"}.get(id(box.clickedButton()), "cancel")

    def detach(self) -> None:
        """Leave the child running (its events keep going to the run directory) and stop watching it."""
        if self.supervisor is not None:
            self.supervisor.requestInterruption()
            self.supervisor.event.disconnect(self.handle_event)
            self.supervisor.ended.disconnect(self._on_ended)
        self.gpu_panel.stop()

    def shutdown(self) -> None:
        self.gpu_panel.stop()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
