"""QtTrainingSupervisor: the window's handle on a training child, its events and ending as Qt signals.

The work is core's (`studio.core.train.supervisor.TrainingSupervisor`: starting or watching the process,
tailing events.jsonl, deciding the ending); this adapter runs that loop on a background task and re-emits
what it reports on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from studio.core.runs.store import RunDirectory
from studio.core.train.supervisor import TrainingSupervisor
from studio.ui.background import BackgroundTask, TaskRunner, TaskState

__all__ = ["QtTrainingSupervisor"]


class QtTrainingSupervisor(QObject):
    """Starts `finetune-studio train` for a run directory and reports its events and its ending.

    Signals: `event(dict)` for every event of the run (from its first line), `ended(status, message)`
    once the process is gone, with status completed | stopped | failed.
    """

    event = Signal(dict)
    ended = Signal(str, str)

    def __init__(self, run_dir: RunDirectory, *, resume: bool = False, resume_from: Path | None = None,
                 attach_pid: int | None = None, attach_started_by: float | None = None,
                 stop_timeout_s: float = 120.0, parent: QObject | None = None):
        super().__init__(parent)
        self.core = TrainingSupervisor(run_dir, resume=resume, resume_from=resume_from, attach_pid=attach_pid,
                                       attach_started_by=attach_started_by, stop_timeout_s=stop_timeout_s)
        self._tasks = TaskRunner(self)
        self._task: BackgroundTask | None = None
        self._ended = False

    @classmethod
    def attach(cls, run_dir: RunDirectory, **kwargs) -> "QtTrainingSupervisor | None":
        """A supervisor watching the run's live training process (started by an earlier window); None if
        the run is not training."""
        process = run_dir.training_process()
        if process is None:
            return None
        pid, started_by = process
        return cls(run_dir, attach_pid=pid, attach_started_by=started_by, **kwargs)

    @property
    def run_dir(self) -> RunDirectory:
        return self.core.run_dir

    @property
    def pid(self) -> int | None:
        return self.core.pid

    @property
    def attached(self) -> bool:
        """Whether this supervisor watches a process it did not start."""
        return self.core.attached

    @property
    def stopping(self) -> bool:
        return self.core.stopping

    @property
    def running(self) -> bool:
        """From `start()` until `ended` is emitted (or the watch is given up by `detach()`)."""
        return self._task is not None and self._task.running and not self._ended

    def start(self) -> None:
        self._ended = False
        # The ending travels on the progress channel, after the events on the partial one: both are queued in
        # the order the loop reports them, so `ended` always follows the run's last `event`.
        self._task = self._tasks.start(self._supervise, on_partial=self.event.emit, on_progress=self._on_ended,
                                       name=f"supervisor of {self.core.run_dir.name}")

    def _supervise(self, state: TaskState) -> None:
        self.core.supervise(state.partial, state.progress, detached=state.cancelled, wait=state.wait)

    def _on_ended(self, status: str, message: str) -> None:
        self._ended = True
        self.ended.emit(status, message)

    def request_stop(self) -> None:
        """First call: ask the run to save and stop. Second call: kill it."""
        self.core.request_stop()

    def kill(self) -> None:
        self.core.kill()

    def detach(self) -> None:
        """Stop watching, leave the process running (its events keep going to the run directory); no `ended`."""
        self._tasks.cancel()

    def wait(self, timeout_ms: int | None = None) -> bool:
        """Wait for the watching thread to end (forever without a timeout); False if it did not in time."""
        if self._task is None:
            return True
        return self._task.wait() if timeout_ms is None else self._task.wait(timeout_ms)
