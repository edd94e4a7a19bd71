"""The one link between a long core function and whoever runs it: a `TaskState`.

Every long core function (reading data, counting tokens, an eval, an export, a download, a merge, a check of
an export) takes `task: TaskState = NO_TASK` and nothing else for it: it reports with `task.progress(...)`
(the values its docstring names), hands intermediate results to `task.partial(value)`, and polls
`task.cancelled()` between pieces of work, stopping with its own "cancelled" exception or result. One
spelling everywhere, so a caller never has to learn whether this function wants a stop callable, an Event
or a cancel flag.

The window's implementation is `studio.ui.background.WindowTaskState` (reports become Qt signals, cancel comes from
the TaskRunner); the CLI and the tests use `Task` (plain callbacks, an optional Event) or `NO_TASK`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TaskState(Protocol):
    """What a long core function sees of the task running it."""

    def progress(self, *values: Any) -> None:
        """Report progress; the values are the function's own (e.g. `fraction, message`)."""

    def partial(self, value: Any) -> None:
        """Hand over an intermediate result (the first rows, a batch of results)."""

    def cancelled(self) -> bool:
        """True once whoever runs the task asked it to stop: the function should return or raise soon."""


class Task:
    """A TaskState made of plain callbacks, for a caller without a window (the CLI, a test, a script).

    `progress` and `partial` receive what the function reports; `cancel` (an Event, or a callable answering
    "stop now?", e.g. a training run's stop-request file) is what `cancelled()` polls."""

    def __init__(self, progress: Callable[..., Any] | None = None, partial: Callable[[Any], Any] | None = None,
                 cancel: threading.Event | Callable[[], bool] | None = None):
        self._progress = progress
        self._partial = partial
        self._cancel = cancel.is_set if isinstance(cancel, threading.Event) else cancel

    def progress(self, *values: Any) -> None:
        if self._progress is not None:
            self._progress(*values)

    def partial(self, value: Any) -> None:
        if self._partial is not None:
            self._partial(value)

    def cancelled(self) -> bool:
        return self._cancel is not None and bool(self._cancel())


NO_TASK: TaskState = Task()
"""Nobody watching and nobody cancelling: the default of every long core function."""


def reporting(task: TaskState, progress: Callable[..., Any]) -> TaskState:
    """`task`, with its progress going to `progress` instead: how a function hands a part of its work to another
    one whose progress values differ from its own (a slice of a fraction, a count turned into a fraction)."""
    return Task(progress, task.partial, task.cancelled)
