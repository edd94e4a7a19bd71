"""QtTrainingSupervisor: the window's handle on a training child, its events and ending as Qt signals.

The work is core's (`studio.core.train.supervisor.TrainingSupervisor`: starting or watching the process,
tailing events.jsonl, deciding the ending); this adapter runs that loop on a background task and re-emits
what it reports on the GUI thread.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from studio.core.sessions.training import RunDirectory, TrainingSupervisor
from studio.ui.background import BackgroundTask, TaskRunner, WindowTaskState

__all__ = ["QtTrainingSupervisor"]


class QtTrainingSupervisor(QObject):
    """Starts `finetune-studio train` for a run directory and reports its events and its ending.

    Signals: `event(Event)` for every event of the run (from its first line, typed: core.runs.events),
    `ended(status, message)` once the process is gone, with status completed | stopped | failed.
    """

    event = Signal(object)
    ended = Signal(str, str)

    def __init__(self, core: TrainingSupervisor, parent: QObject | None = None):
        """`core`: the supervisor of a run to start, resume or watch (the Training session makes it)."""
        super().__init__(parent)
        self.core = core
        self._tasks = TaskRunner(self)
        self._task: BackgroundTask | None = None
        self._ended = False

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

    def _supervise(self, state: WindowTaskState) -> None:
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
