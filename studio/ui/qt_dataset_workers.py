"""Background work for the Dataset tab: reading a dataset, loading a tokenizer, measuring token lengths.

Each worker is a QThread around a Qt-free core function (`dataset.load_data`,
`data_prepare.load_tokenizer`, `data_stats.measure_tokens`) that reports through plain callbacks and
polls a stop flag; results come back to the GUI thread as queued signals. Anything a file can make
the core raise becomes a `failed` signal — nothing reaches the event loop as an exception.

Running workers are kept in a module-level set until they finish, so a tab that is closed (and
garbage-collected) mid-read never destroys a running QThread.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from PySide6.QtCore import QThread, Signal

from studio.core.data.issues import DataError
from studio.core.data.loading import ScanCancelled, load_data

log = logging.getLogger(__name__)

_RUNNING: set[QThread] = set()
_PROGRESS_INTERVAL = 0.1


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
def _no_gc_while_importing() -> Iterator[None]:
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


def _warm_up_arrow() -> None:
    """Import pyarrow, and the pandas it loads on its first array, before reading starts (see above)."""
    import pyarrow

    pyarrow.array([0])


def _keep_alive(worker: QThread) -> None:
    _RUNNING.add(worker)
    worker.finished.connect(lambda: _RUNNING.discard(worker))


class _StoppableWorker(QThread):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._stop = threading.Event()
        _keep_alive(self)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled_requested(self) -> bool:
        return self._stop.is_set()


class QtDataLoadWorker(_StoppableWorker):
    """Reads and normalises one source: `head_ready(LoadedData)` with the first rows, `progress(fraction, rows)`,
    then `loaded(LoadedData)`, `failed(DataError)` or `cancelled()`."""

    head_ready = Signal(object)
    progress = Signal(float, int)
    loaded = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, spec: str, *, fmt: str = "auto", mapping: list[str] | None = None, encoding: str = "utf-8",
                 split: str = "train", text_split: str = "blank_lines", parent=None):
        super().__init__(parent)
        self.spec = spec
        self._options = {"mapping": list(mapping or []), "encoding": encoding, "split": split,
                         "text_split": text_split}
        self._fmt = fmt
        self._last_progress = 0.0

    def _progress(self, fraction: float, rows: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= _PROGRESS_INTERVAL or fraction >= 1.0:
            self._last_progress = now
            self.progress.emit(fraction, rows)

    def run(self) -> None:
        try:
            with _no_gc_while_importing():
                _warm_up_arrow()
            data = load_data(self.spec, self._fmt, progress=self._progress, on_head=self.head_ready.emit,
                             should_stop=self._stop.is_set, **self._options)
        except ScanCancelled:
            self.cancelled.emit()
        except DataError as error:
            self.failed.emit(error)
        except Exception as error:  # nothing a file contains may take the window down
            log.error("reading %s failed:\n%s", self.spec, traceback.format_exc())
            self.failed.emit(DataError(f"{self.spec}: cannot be read ({type(error).__name__}: {error})"))
        else:
            self.loaded.emit(data)


class QtTokenizerWorker(_StoppableWorker):
    """Loads a model's tokenizer (with its chat template) off the GUI thread: `loaded(name, tokenizer)` or
    `failed(name, reason)`."""

    loaded = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, name_or_path: str, *, trust_remote_code: bool = False, parent=None):
        super().__init__(parent)
        self.name = name_or_path
        self._trust_remote_code = trust_remote_code

    def run(self) -> None:
        from studio.core.train.prepare import load_tokenizer

        try:
            with _no_gc_while_importing():
                tokenizer = load_tokenizer(self.name, trust_remote_code=self._trust_remote_code)
        except Exception as error:  # a wrong path or an unreachable Hub id: say so, in one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.failed.emit(self.name, reason)
        else:
            self.loaded.emit(self.name, tokenizer)


class QtTokenStatsWorker(_StoppableWorker):
    """Measures token lengths with its own tokenizer: `partial(TokenStats)` a few times a second, then
    `measured(TokenStats)` or `failed(str)`."""

    partial = Signal(object)
    measured = Signal(object)
    failed = Signal(str)

    def __init__(self, model: str, data: Any, *, train_on_responses_only: bool, max_length: int,
                 limit: int | None, trust_remote_code: bool = False, parent=None):
        super().__init__(parent)
        self._model = model
        self._data = data
        self._kwargs = {"train_on_responses_only": train_on_responses_only, "max_length": max_length,
                        "limit": limit}
        self._trust_remote_code = trust_remote_code

    def run(self) -> None:
        from studio.core.train.prepare import load_tokenizer
        from studio.core.data.stats import measure_tokens

        try:
            with _no_gc_while_importing():
                tokenizer = load_tokenizer(self._model, trust_remote_code=self._trust_remote_code)
            stats = measure_tokens(tokenizer, self._data, on_partial=self.partial.emit,
                                   should_stop=self._stop.is_set, **self._kwargs)
        except ScanCancelled:
            return
        except Exception as error:
            log.error("measuring token lengths failed:\n%s", traceback.format_exc())
            self.failed.emit(f"{type(error).__name__}: {error}")
        else:
            self.measured.emit(stats)
