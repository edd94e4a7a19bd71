"""The window's one way to run work off the GUI thread.

A tab never subclasses QThread. It hands a Qt-free function to a `TaskRunner` it owns:

    self.tasks = TaskRunner(self)
    self.tasks.start(lambda state: load_data(spec, task=state),
                     on_result=self._show, on_error=self._show_error, on_partial=self._show_head)

The function receives a `WindowTaskState`, the only thing it needs to know about threads: `progress(...)` and
`partial(value)` to report, `cancelled()` to poll (the protocol every long core function takes as its `task`,
core.system.tasks.TaskState), and `wait(seconds)` for an interruptible sleep. Everything the function reports,
returns or raises arrives on the GUI thread as a call of the matching `on_...` callback; an exception never
reaches the event loop.

The rules every tab then gets for free (in the spirit of Orange3's TaskState/ConcurrentMixin and Anki's
QueryOp):
- a new task on the same runner cancels the old one, and the old one's late results are dropped, so a
  slow read of the previous file never overwrites the view of the current one;
- `cancel()` asks the function to stop (it polls `state.cancelled()`); its results are dropped from then on;
- `shutdown()` cancels and waits, for the owner's closeEvent; `wait_for_all()` is the window's last call;
- a running task stays referenced until its thread ends, whatever happens to the widget that started it
  (a QThread destroyed while running aborts the process).
"""

from __future__ import annotations

import gc
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from studio.core.system import tasks

log = logging.getLogger(__name__)

Callback = Callable[..., Any] | None

_RUNNING: set[BackgroundTask] = set()
"""Every task whose thread has not ended: kept referenced so Python never destroys a running QThread."""


class WindowTaskState(tasks.TaskState):
    """What a background function sees of its task: report, poll for cancellation, sleep interruptibly."""

    def __init__(self, task: BackgroundTask):
        self._task = task
        self._cancel = threading.Event()

    def progress(self, *values: Any) -> None:
        """Report progress (any values the function's progress callback takes); delivered to `on_progress`."""
        if not self._cancel.is_set():
            self._task.progressed.emit(values)

    def partial(self, value: Any) -> None:
        """Deliver an intermediate result (the first rows, a streamed piece) to `on_partial`."""
        if not self._cancel.is_set():
            self._task.partial_ready.emit(value)

    def cancelled(self) -> bool:
        """True once the task was cancelled, replaced or shut down: the function should return soon."""
        return self._cancel.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True early when the task is cancelled."""
        return self._cancel.wait(seconds)

    def stopping_on(self, stop: threading.Event) -> tasks.TaskState:
        """This task, cancelled also when `stop` is set: for an owner that stops the work but still wants its
        outcome delivered (the Export dialog's Cancel ends an export as a result saying so)."""
        return tasks.Task(self.progress, self.partial, lambda: stop.is_set() or self.cancelled())


class BackgroundTask(QThread):
    """One function on one thread. Made by `TaskRunner.start`; use its `cancel()`, `wait()` and `running`."""

    progressed = Signal(object)
    partial_ready = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)

    def __init__(self, function: Callable[[WindowTaskState], Any], *, name: str = "",
                 expected_errors: tuple[type[BaseException], ...] = ()):
        super().__init__()
        self.setObjectName(name or getattr(function, "__name__", "task"))
        self.state = WindowTaskState(self)
        self._function = function
        self._expected = expected_errors
        _RUNNING.add(self)
        self.finished.connect(self._forget)

    def run(self) -> None:
        try:
            result = self._function(self.state)
        except self._expected as error:
            self.failed.emit(error)
        except Exception as error:  # noqa: BLE001 - nothing a background function raises may end the window
            log.error("background task %s failed:\n%s", self.objectName(), traceback.format_exc())
            self.failed.emit(error)
        else:
            self.succeeded.emit(result)

    def cancel(self) -> None:
        self.state._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self.state.cancelled()

    @property
    def running(self) -> bool:
        return self.isRunning() or (not self.isFinished() and self in _RUNNING)

    def _forget(self) -> None:
        _RUNNING.discard(self)


def describe_error(error: BaseException) -> str:
    """One line for a failed task: the message of an error the function raised on purpose, else its type too."""
    text = str(error).strip()
    if isinstance(error, (ValueError, OSError, LookupError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TaskRunner(QObject):
    """Runs one task at a time for its owner (a tab or a widget); see the module docstring."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.current: BackgroundTask | None = None
        self._callbacks: dict[BackgroundTask, dict[str, Callback]] = {}

    def start(self, function: Callable[[WindowTaskState], Any], *, on_result: Callback = None, on_error: Callback = None,
              on_progress: Callback = None, on_partial: Callback = None, on_cancelled: Callback = None,
              on_done: Callback = None, expected_errors: tuple[type[BaseException], ...] = (),
              name: str = "") -> BackgroundTask:
        """Cancel the current task (its results are dropped) and run `function(state)` on a new thread.

        `on_result(value)`, `on_error(exception)`, `on_progress(*values)`, `on_partial(value)` run on the GUI
        thread. `on_cancelled()` runs once the cancelled task has returned; `on_done()` after whichever of
        result, error or cancellation came last. An exception in `expected_errors` is not logged as a fault.
        """
        self.cancel()
        task = BackgroundTask(function, name=name, expected_errors=expected_errors)
        self._callbacks[task] = {"result": on_result, "error": on_error, "progress": on_progress,
                                 "partial": on_partial, "cancelled": on_cancelled, "done": on_done}
        self.current = task
        # Bound slots of this runner, which lives on the GUI thread: Qt queues every delivery onto it.
        task.progressed.connect(self._progressed)
        task.partial_ready.connect(self._partial)
        task.succeeded.connect(self._succeeded)
        task.failed.connect(self._failed)
        task.finished.connect(self._finished)
        task.start()
        return task

    def _deliver(self, kind: str, *args: Any) -> None:
        task = self.sender()
        callbacks = self._callbacks.get(task)
        if callbacks and callbacks[kind] is not None and not task.cancelled:
            callbacks[kind](*args)

    @Slot(object)
    def _progressed(self, values: tuple) -> None:
        self._deliver("progress", *values)

    @Slot(object)
    def _partial(self, value: Any) -> None:
        self._deliver("partial", value)

    @Slot(object)
    def _succeeded(self, value: Any) -> None:
        self._deliver("result", value)

    @Slot(object)
    def _failed(self, error: BaseException) -> None:
        self._deliver("error", error)

    @Slot()
    def _finished(self) -> None:
        task = self.sender()
        callbacks = self._callbacks.pop(task, None) or {}
        if self.current is task:
            self.current = None
        if task.cancelled and callbacks.get("cancelled") is not None:
            callbacks["cancelled"]()
        if callbacks.get("done") is not None:
            callbacks["done"]()

    @property
    def busy(self) -> bool:
        """A task of this runner has not been delivered as ended yet. Not the thread's own state: the thread ends
        before its last deliveries (result, `on_done`) reach the GUI thread, and until they have, the owner's view
        still shows it running."""
        return self.current is not None

    def cancel(self) -> None:
        """Ask the current task to stop; from now on nothing it reports reaches the owner."""
        if self.current is not None:
            self.current.cancel()
            self.current = None

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel and wait for the current task (the owner's closeEvent); False if it did not end in time."""
        task = self.current
        self.cancel()
        return task.wait(timeout_ms) if task is not None else True


def running_tasks() -> set[BackgroundTask]:
    """The tasks whose threads have not ended yet (the window waits for them before it exits)."""
    return {task for task in _RUNNING if not task.isFinished()}


def wait_for_all(timeout_ms: int = 30_000) -> bool:
    """Cancel every running task and wait for the threads, so none is destroyed while it runs."""
    tasks = list(running_tasks())
    for task in tasks:
        task.cancel()
    return all(task.wait(timeout_ms) for task in tasks)


# --- the window's heap while background work imports the heavy libraries ----------------------------------------


def freeze_heap() -> None:
    """Exclude every object alive now from the cyclic garbage collector's scans.

    With torch, transformers and pyarrow imported the heap holds hundreds of thousands of long-lived
    objects, and each full collection walks all of them while holding the GIL: 150–400 ms during which
    the event loop cannot run (measured while a large file loads). Frozen objects are still freed by
    reference counting; only cycles among them are never collected, which long-lived modules do not need.
    """
    gc.freeze()


_gc_pauses = 0
_gc_lock = threading.Lock()


@contextmanager
def no_gc_while_importing() -> Iterator[None]:
    """Importing torch and transformers creates so many objects that full collections run mid-import, each
    stalling the window for longer than the last; collect nothing until the import is done, then freeze."""
    global _gc_pauses
    with _gc_lock:
        _gc_pauses += 1
        if _gc_pauses == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0:
                gc.freeze()
                gc.enable()
