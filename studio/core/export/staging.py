"""What every export shares: progress with cancel, staged output folders, clear disk-full errors.

An export is a plain function (the Orange3 long-task pattern) taking a `task` (core.system.tasks: it
reports `task.progress(fraction, message)` and stops once `task.cancelled()`). Output is written beside its final place
(`<name>.partial`) and renamed into place only when complete, so a cancel, a full disk or a crash
never leaves a half-written export under the name the user chose.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from studio.core.system.tasks import NO_TASK, TaskState
from studio.core.system.units import format_bytes



class ExportError(ValueError):
    """An export the user can fix: a missing model, an unsupported architecture, a full disk."""


class ExportCancelled(Exception):
    """The user cancelled; nothing was left under the output name."""


class Reporter:
    """Progress reporting and cancel checks for one export, optionally a slice of a bigger one.

    `report(fraction, message)` reports (fraction of this slice) and raises ExportCancelled once the task is
    cancelled. A Reporter is itself a TaskState, so a slice is handed to the export function doing that part
    (the merge before a GGUF export) as its `task`."""

    def __init__(self, task: TaskState = NO_TASK, *, start: float = 0.0, end: float = 1.0):
        self.task = task
        self._start, self._end = start, end

    def __call__(self, fraction: float, message: str) -> None:
        self.progress(fraction, message)

    def progress(self, fraction: float, message: str) -> None:
        self.check()
        fraction = min(max(fraction, 0.0), 1.0)
        self.task.progress(self._start + (self._end - self._start) * fraction, message)

    def partial(self, value: Any) -> None:
        self.task.partial(value)

    def cancelled(self) -> bool:
        return self.task.cancelled()

    def check(self) -> None:
        """Raise ExportCancelled if the user asked to cancel."""
        if self.task.cancelled():
            raise ExportCancelled("export cancelled")

    def part(self, start: float, end: float) -> Reporter:
        """A reporter for the [start, end] slice of this one (e.g. the merge before a GGUF export)."""
        span = self._end - self._start
        return Reporter(self.task, start=self._start + span * start, end=self._start + span * end)


# What a disk-full error looks like where it is not an OSError: safetensors' and tokenizers' Rust writers raise
# their own exception types carrying the OS message ("... No space left on device (os error 28)").
_NO_SPACE_TEXTS = ("os error 28", "no space left on device", "disk quota exceeded")


def disk_error_message(error: BaseException, folder: Path) -> str | None:
    """A user-facing message for a full disk or an unwritable folder, None for other errors."""
    number = getattr(error, "errno", None)
    if number in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or (
            not isinstance(error, OSError) and any(text in str(error).lower() for text in _NO_SPACE_TEXTS)):
        return f"no space left on {folder} — free some space there or choose another folder; nothing was changed"
    if number in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{folder}: cannot write there ({error.strerror}); nothing was changed"
    return None


@contextlib.contextmanager
def disk_errors(folder: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, also as the Rust writers report it) or an unwritable folder into an ExportError
    naming the folder."""
    try:
        yield
    except ExportError:
        raise
    except Exception as error:  # noqa: BLE001 - only disk errors are translated; the rest is re-raised as it is
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


# --- the output rule: one for every writer (adapter folder and zip, merge, GGUF, the Export dialog, the CLI) ---------
#
# 1. A run folder, a folder inside one, or a folder holding one is never an output.
# 2. A folder export goes into a new (or empty) folder. An existing folder is replaced only when it holds nothing but
#    an earlier studio export — exactly the files its finetune_studio.json lists, each with the hash it was written
#    with — and only when asked (`overwrite`); the old files are moved aside until the new export is complete.
# 3. Anything else there (a .git/, the user's notes, an edited Modelfile) is refused, naming the first such file.
# 4. A file export (GGUF, zip) is a new file: its name and its companions' (NAME.Modelfile, NAME.md, ...) may exist
#    only as such an unchanged earlier export, and then only with `overwrite`. Other files in the folder are fine.

MANIFEST_KEY = "export_files"
"""In an export's finetune_studio.json: {path relative to the folder: sha256} of every file the export wrote."""
MANIFEST_FILE = "finetune_studio.json"  # the same file as runs.record.SUMMARY_FILE: the export's record
ASIDE_SUFFIX = ".replaced"


class OutputNeedsOverwrite(ExportError):
    """The output holds an unchanged earlier export: replacing it needs the user's word (--overwrite, a question)."""

    def __init__(self, message: str, output: Path):
        super().__init__(message)
        self.output = output


class OutputHoldsOtherFiles(ExportError):
    """The output holds something no export wrote (or an export's file, edited): refused, with a free name to offer
    instead (`suggestion`), never deleted."""

    def __init__(self, message: str, suggestion: Path):
        super().__init__(message)
        self.suggestion = suggestion


def gguf_companions(output: Path) -> list[Path]:
    """The files a GGUF export writes beside NAME.gguf, each named for it so two quants sit side by side."""
    stem = Path(output).with_suffix("")
    return [stem.with_name(stem.name + suffix) for suffix in (".Modelfile", ".md", ".loss-curve.svg")]


def manifest_path(output: Path, *, is_dir: bool) -> Path:
    """Where an export records its files: inside a folder export, NAME.finetune_studio.json beside a file export."""
    output = Path(output)
    return output / MANIFEST_FILE if is_dir else output.with_name(output.with_suffix("").name + "." + MANIFEST_FILE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(manifest: Path) -> dict[str, str] | None:
    """{relative path: sha256} an export recorded, or None when `manifest` is absent or records no files."""
    try:
        files = json.loads(Path(manifest).read_text(encoding="utf-8")).get(MANIFEST_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def record_files(folder: Path, manifest: Path, names: list[str] | None = None) -> None:
    """Record `names` (default: every file under `folder`), with their hashes, in `manifest`; the rest of an existing
    manifest (a run's summary in finetune_studio.json) is kept."""
    folder, manifest = Path(folder), Path(manifest)
    if names is None:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p != manifest)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[MANIFEST_KEY] = {name: sha256_of(folder / name) for name in names}
    manifest.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _not_written_by_export(folder: Path, manifest: Path) -> str | None:
    """The first entry under `folder` that is not an unchanged file of the export `manifest` records, or None."""
    recorded = read_manifest(manifest)
    if recorded is None:
        present = sorted(folder.iterdir())
        return (present[0].name + ("/" if present[0].is_dir() else "")) if present else None
    holding = {parent.as_posix() for name in recorded for parent in Path(name).parents}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        base = Path(root).relative_to(folder)
        for name in dirs:
            relative = (base / name).as_posix()
            if Path(root, name).is_symlink() or relative not in holding:
                return relative + "/"
        for name in sorted(files):
            path = Path(root, name)
            relative = (base / name).as_posix()
            if path == manifest:
                continue
            if path.is_symlink() or recorded.get(relative) != sha256_of(path):
                return relative
    return None


def _run_folder_at_or_above(path: Path) -> Path | None:
    from studio.core.runs.store import is_run_folder

    return next((folder for folder in (path, *path.parents) if is_run_folder(folder)), None)


def _run_folder_below(folder: Path) -> Path | None:
    from studio.core.runs.store import is_run_folder

    for root, dirs, _files in os.walk(folder):
        for name in sorted(dirs):
            if is_run_folder(Path(root, name)):
                return Path(root, name)
    return None


def next_free_name(output: Path, *, is_dir: bool) -> Path:
    """NAME-2, NAME-3, ... beside `output`: the first whose every file is free (what the window offers)."""
    output = Path(output)
    for n in range(2, 10_000):
        candidate = output.with_name(f"{output.stem}-{n}{output.suffix}") if not is_dir \
            else output.with_name(f"{output.name}-{n}")
        taken = [candidate] if is_dir else [candidate, *_companions(candidate), manifest_path(candidate, is_dir=False)]
        if not any(path.exists() or path.is_symlink() for path in taken):
            return candidate
    return output


def _companions(output: Path) -> list[Path]:
    return gguf_companions(output) if output.suffix.lower() == ".gguf" else []


def _check_writable(folder: Path) -> None:
    """Refuse a folder the export could not write into (a read-only mount, no permission) before any work;
    os.access asks the kernel, which also answers for read-only file systems, root included."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_mount(existing) else "permission denied"
        raise ExportError(f"{existing}: cannot write there ({reason}); nothing was changed")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def check_output(output: Path, *, is_dir: bool, overwrite: bool = False) -> Path:
    """`output` made absolute, or an ExportError when the output rule (above) refuses it; asked before any work and
    again just before the export replaces anything."""
    output = Path(os.path.abspath(Path(output).expanduser()))
    output = output.parent.resolve() / output.name  # a link named as the output is judged as itself, not its target
    run = _run_folder_at_or_above(output if is_dir else output.parent)
    if run == output:
        raise ExportError(f"{output}: is a run folder; an export never writes into a run — choose a new folder "
                          "outside it; nothing was changed")
    if run is not None:
        raise ExportError(f"{output}: is inside the run folder {run}; an export never writes into a run — choose "
                          "a place outside it; nothing was changed")
    _check_writable(output.parent)
    if is_dir:
        if output.is_symlink() or (output.exists() and not output.is_dir()):
            raise ExportError(f"{output}: is a file, not a folder; choose a name for a new folder; nothing was changed")
        if not output.is_dir():
            return output
        if os.path.ismount(output):
            raise ExportError(f"{output}: is a mount point, which cannot be replaced; export into a new folder "
                              f"inside it (e.g. {output / 'export'}); nothing was changed")
        below = _run_folder_below(output)
        if below is not None:
            raise ExportError(f"{output}: holds the run folder {below}; an export never replaces a run — choose a "
                              "new folder; nothing was changed")
        if not any(output.iterdir()):
            return output
        foreign = _not_written_by_export(output, manifest_path(output, is_dir=True))
        if foreign is not None:
            free = next_free_name(output, is_dir=True)
            raise OutputHoldsOtherFiles(f"{output}: holds {foreign}, which is not part of an earlier Finetune Studio "
                                        f"export; choose a new folder (e.g. {free}); nothing was changed", free)
        if not overwrite:
            raise OutputNeedsOverwrite(f"{output}: holds an earlier export; add --overwrite to replace it; nothing "
                                       "was changed", output)
        return output
    if output.is_dir():
        raise ExportError(f"{output}: is a folder; give the name of the file to write; nothing was changed")
    manifest = manifest_path(output, is_dir=False)
    taken = [path for path in (output, *_companions(output), manifest) if path.exists() or path.is_symlink()]
    if not taken:
        return output
    recorded = read_manifest(manifest) or {}
    for path in taken:
        if path != manifest and (path.is_symlink() or not path.is_file()
                                 or recorded.get(path.name) != sha256_of(path)):
            free = next_free_name(output, is_dir=False)
            raise OutputHoldsOtherFiles(f"{path}: already exists and is not an unchanged Finetune Studio export; "
                                        f"choose a new name (e.g. {free.name}); nothing was changed", free)
    if not overwrite:
        raise OutputNeedsOverwrite(f"{output}: is an earlier export; add --overwrite to replace it; nothing was "
                                   "changed", output)
    return output


def check_source_idle(source: Path) -> None:
    """An ExportError when `source` (a run, or a run's adapter folder) is still training (runs.store.training_refusal)."""
    from studio.core.runs.store import training_refusal

    if (message := training_refusal(source)) is not None:
        raise ExportError(message)


def check_export(source: Path, output: Path, *, is_dir: bool, overwrite: bool = False) -> Path:
    """The one check every writer asks before its work: the source is not training, the output rule allows it."""
    check_source_idle(source)
    return check_output(output, is_dir=is_dir, overwrite=overwrite)


def partial_path(output: Path, *, is_dir: bool) -> Path:
    """Where an export is staged before it is moved to `output`: a folder beside it (for a file export, a hidden
    folder holding the file and its companions under their final names)."""
    output = Path(output)
    return output.with_name(output.name + ".partial") if is_dir else output.with_name("." + output.name + ".partial")


@contextlib.contextmanager
def staged_output(output: Path, *, is_dir: bool, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `output`; on success its contents take `output`'s place, on any error or cancel
    it is removed and nothing at `output` has changed.

    For a folder export the staging folder becomes `output`; for a file export the files written into it (named
    as they are to be named: NAME.gguf, NAME.Modelfile, ...) move beside `output`. Either way the export's files are
    recorded with their hashes first (manifest_path), and what an --overwrite replaces is moved aside until the new
    files are in place, then removed — or put back if the move fails.
    """
    # The writer asked check_export before its work; the rule is asked again below, just before anything is
    # replaced (hashing a big earlier export twice is enough).
    output = Path(os.path.abspath(Path(output).expanduser()))
    staging = partial_path(output, is_dir=is_dir)
    with disk_errors(output.parent):
        _remove(staging)
        output.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    try:
        yield staging
        with disk_errors(output.parent):
            record_files(staging, manifest_path(staging if is_dir else staging / output.name, is_dir=is_dir))
        check_output(output, is_dir=is_dir, overwrite=overwrite)  # nothing of the user's arrived meanwhile
        _commit(staging, output, is_dir=is_dir)
    except BaseException:
        _remove(staging)
        raise


def _commit(staging: Path, output: Path, *, is_dir: bool) -> None:
    if is_dir:
        moves = [(staging, output)]
        replaced = [output] if output.exists() else []
    else:
        moves = [(path, output.parent / path.name) for path in sorted(staging.iterdir())]
        old = read_manifest(manifest_path(output, is_dir=False)) or {}
        replaced = sorted({target for _, target in moves if target.exists()}
                          | {output.parent / name for name in old if (output.parent / name).exists()})
    aside = [(path, path.with_name(path.name + ASIDE_SUFFIX)) for path in replaced]
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, away in aside:
            _remove(away)
            os.replace(path, away)
            moved.append((path, away))
        for source, target in moves:
            os.replace(source, target)
            placed.append(target)
    except OSError as error:
        for target in placed:
            _remove(target)
        for path, away in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(away, path)
        raise ExportError(disk_error_message(error, output.parent)
                          or f"{output}: the export could not be moved into place ({error.strerror or error}); "
                             "nothing was changed") from None
    for _, away in aside:
        _remove(away)
    if not is_dir:
        _remove(staging)


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return  # and no unlink: on a read-only file system even that of a missing file fails (EROFS)
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
