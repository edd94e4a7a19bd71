"""Background work for the window: a generic QThread that runs a core function off the GUI thread.

Core functions stay Qt-free; they report progress through a plain callback, which this worker turns
into a queued signal. Errors come back as a message (the traceback goes to the terminal / log),
never as an exception in the GUI thread.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

log = logging.getLogger(__name__)


class QtFunctionWorker(QThread):
    """Runs `function(*args, progress=<callback>, **kwargs)` (or without `progress`) in a thread.

    Signals: `progress(str)`, `succeeded(object)` with the return value, `failed(str)` with a
    one-line reason.
    """

    progress = Signal(str)
    succeeded = Signal(object)
    failed = Signal(str)

    def __init__(self, function: Callable[..., Any], *args: Any, pass_progress: bool = False,
                 expected_errors: tuple[type[BaseException], ...] = (), parent=None, **kwargs: Any):
        super().__init__(parent)
        self._function = function
        self._args = args
        self._kwargs = dict(kwargs)
        if pass_progress:
            self._kwargs["progress"] = self.progress.emit
        self._expected = expected_errors

    def run(self) -> None:
        try:
            result = self._function(*self._args, **self._kwargs)
        except self._expected as error:
            self.failed.emit(str(error))
        except Exception as error:
            log.error("background task failed:\n%s", traceback.format_exc())
            self.failed.emit(f"{type(error).__name__}: {error}")
        else:
            self.succeeded.emit(result)
