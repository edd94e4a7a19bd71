"""What every export shares: progress with cancel, staged output folders, clear disk-full errors.

An export is a plain function (the Orange3 long-task pattern) taking `on_progress(fraction,
message)` and a `threading.Event` to cancel it. Output is written beside its final place
(`<name>.partial`) and renamed into place only when complete, so a cancel, a full disk or a crash
never leaves a half-written export under the name the user chose.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from studio.core.system.units import format_bytes

ProgressCallback = Callable[[float, str], None]
"""`on_progress(fraction, message)`: fraction in [0, 1] of the whole export."""


class ExportError(ValueError):
    """An export the user can fix: a missing model, an unsupported architecture, a full disk."""


class ExportCancelled(Exception):
    """The user cancelled; nothing was left under the output name."""


class Reporter:
    """Progress reporting and cancel checks for one export, optionally a slice of a bigger one."""

    def __init__(self, on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 *, start: float = 0.0, end: float = 1.0):
        self._callback = on_progress
        self.cancel = cancel if cancel is not None else threading.Event()
        self._start, self._end = start, end

    def __call__(self, fraction: float, message: str) -> None:
        self.check()
        if self._callback is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            self._callback(self._start + (self._end - self._start) * fraction, message)

    def check(self) -> None:
        """Raise ExportCancelled if the user asked to cancel."""
        if self.cancel.is_set():
            raise ExportCancelled("export cancelled")

    def part(self, start: float, end: float) -> Reporter:
        """A reporter for the [start, end] slice of this one (e.g. the merge before a GGUF export)."""
        span = self._end - self._start
        return Reporter(self._callback, self.cancel, start=self._start + span * start, end=self._start + span * end)


def disk_error_message(error: OSError, folder: Path) -> str | None:
    """A user-facing message for a full disk or an unwritable folder, None for other errors."""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"{folder}: the disk is full — free some space there or choose another folder ({error.strerror})"
    if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{folder}: cannot write there ({error.strerror})"
    return None


@contextlib.contextmanager
def disk_errors(folder: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC) or an unwritable folder into an ExportError naming the folder."""
    try:
        yield
    except OSError as error:
        message = disk_error_message(error, Path(folder))
        if message is None:
            raise
        raise ExportError(message) from error


def ensure_free_space(folder: Path, needed_bytes: int) -> None:
    """Refuse early, naming the folder, when it clearly cannot hold `needed_bytes` more."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # cannot tell; the write itself will say so
    if needed_bytes > free:
        raise ExportError(f"{folder}: not enough disk space — the export needs about {format_bytes(needed_bytes)}, "
                          f"{format_bytes(free)} is free")




# Files an export writes beside a GGUF file (in its parent folder); see gguf_export.
GGUF_COMPANIONS = ("Modelfile", "README.md", "loss-curve.svg")


def written_by_studio(path: Path) -> bool:
    """Whether `path` is a file an earlier export wrote: its model card or its Ollama Modelfile."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            head = file.read(2000)
    except OSError:
        return False
    return ("- finetune-studio\n" in head and "Finetune Studio" in head) or "written by Finetune Studio" in head


def check_replaceable(output: Path, *, is_dir: bool, companions: tuple[str, ...] = ()) -> Path:
    """`output` made absolute, or an ExportError when writing there would destroy the user's own files.

    An export replaces what is at its output path. That is right for a new or empty folder and for an earlier
    export (recognised by its model card); a folder of anything else, or a README.md or Modelfile beside a GGUF
    file that the studio did not write, is refused before any work starts.
    """
    output = Path(output).expanduser().resolve()
    if is_dir:
        if output.exists() and not output.is_dir():
            raise ExportError(f"{output}: is a file, not a folder; choose a name for a new folder")
        if output.is_dir():
            present = sorted(p.name for p in output.iterdir())
            if present and not written_by_studio(output / "README.md"):
                shown = ", ".join(present[:3]) + (", …" if len(present) > 3 else "")
                raise ExportError(f"{output}: the folder already holds files ({shown}) and is not an earlier "
                                  "export; choose a new or empty folder — nothing was changed")
    elif output.is_dir():
        raise ExportError(f"{output}: is a folder; give the name of the file to write")
    for name in companions:
        beside = output.parent / name
        if beside.exists() and not written_by_studio(beside):
            raise ExportError(f"{beside}: already exists and was not written by Finetune Studio; export into a "
                              "folder of its own — nothing was changed")
    return output


def partial_path(output: Path) -> Path:
    """Where an export is staged before it is renamed to `output`."""
    return output.with_name(output.name + ".partial")


@contextlib.contextmanager
def staged_output(output: Path, *, is_dir: bool, companions: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a staging path beside `output`; on success it replaces `output`, on any error it is removed.

    Exports call check_replaceable before their long work too; this last check guards the replace itself.
    """
    output = check_replaceable(output, is_dir=is_dir, companions=companions)
    staging = partial_path(output)
    _remove(staging)
    with disk_errors(output.parent):
        output.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            staging.mkdir()
    try:
        yield staging
        with disk_errors(output.parent):
            if output.is_dir() and not output.is_symlink():
                shutil.rmtree(output)
            os.replace(staging, output)
    except BaseException:
        _remove(staging)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def copy_folder(source: Path, target: Path, report: Reporter, *, start: float = 0.0, end: float = 1.0,
                skip: Callable[[Path], bool] = lambda path: False) -> None:
    """Copy the files of `source` into the existing folder `target`, reporting by bytes, cancellable."""
    files = [p for p in sorted(Path(source).rglob("*")) if p.is_file() and not skip(p.relative_to(source))]
    total = sum(p.stat().st_size for p in files) or 1
    done = 0
    for path in files:
        report(start + (end - start) * done / total, f"Copying {path.name}")
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        done += path.stat().st_size
    report(end, "Copied")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """No tqdm bars from transformers and no gguf vocabulary chatter: exports report through on_progress."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_logger = logging.getLogger("gguf")
    level = gguf_logger.level
    gguf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        gguf_logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
