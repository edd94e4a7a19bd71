"""Run directories: where a run's config, events, checkpoints, adapter and log live.

    <runs dir>/<run name>/
        run.toml            the resolved config, enough to reproduce the run
        events.jsonl        append-only event log (see studio.core.runs.events)
        train.log           the training process's console output (warnings, tracebacks)
        checkpoints/        checkpoint-N folders, each written atomically
        adapter/            the final PEFT adapter with tokenizer and chat template
        stop-request        present while a stop has been asked for
        run.lock            locked by the run's training process while it lives (see studio.core.system.folder_lock)

The stop request is a file rather than a signal so that it works the same on every platform and
from any process — also from a window reopened after the one that started the run was closed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.runs.events import read_events, read_last_event
from studio.core.system.folder_lock import FolderLock, is_locked, lock_holder
from studio.core.system.paths import runs_dir, safe_name


@dataclass(frozen=True)


class RunDirectory:
    """Paths inside one run directory (nothing is created until written)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "run.toml"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def stop_request_path(self) -> Path:
        return self.path / "stop-request"

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    def writer_lock(self) -> FolderLock:
        """The lock the run's one training process holds for its whole life (call `acquire()` on it)."""
        return FolderLock(self.lock_path)

    def busy_message(self) -> str | None:
        """Why nothing may train into this folder now (a live process holds its lock), or None."""
        if not is_locked(self.lock_path):
            return None
        pid = lock_holder(self.lock_path)
        by = f"process {pid}" if pid else "another process"
        return (f"{self.path}: the run is still training ({by}, started from a terminal or another window); "
                "stop it, or wait for it to end, before resuming or starting into this folder")

    def training_refusal(self) -> str | None:
        """Why nothing may read this run's adapter or write beside it now (an eval, an export, a merge): "RUN is
        training, at step N of M; stop it or wait" while a live process holds its lock, else None. The adapter
        there is an older step's, and the folder is the training process's."""
        if not is_locked(self.lock_path):
            return None
        step, total = 0, None
        for event in self.events():
            if event.get("event") == "started":
                total = event.get("total_steps") or total
            elif event.get("step") is not None and event.get("event") in ("step", "eval", "checkpoint"):
                step = max(step, int(event["step"]))
        at = f", at step {step} of {total}" if total else ""
        return f"{self.path} is training{at}; stop it or wait"

    def remove_leftovers(self) -> list[Path]:
        """Remove what a killed process left half-written: a staged checkpoint and a staged adapter.

        Only the lock's holder may call this: in a folder another process trains into, these are its saves.
        """
        removed = []
        for leftover in (self.checkpoints_dir / ".staging", self.path / (self.adapter_dir.name + ".partial")):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
        return removed

    def request_stop(self) -> None:
        """Ask the training process to save and stop at the end of the current step."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.stop_request_path.write_text(f"{time.time()}\n", encoding="utf-8")

    def stop_requested(self) -> bool:
        return self.stop_request_path.exists()

    def clear_stop_request(self) -> None:
        self.stop_request_path.unlink(missing_ok=True)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (staging folders are never listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest_checkpoint(self) -> Path | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1] if checkpoints else None

    @property
    def set_aside_dir(self) -> Path:
        return self.checkpoints_dir / "set-aside"

    def set_aside_checkpoints_after(self, step: int) -> list[Path]:
        """Move the checkpoints later than `step` into `checkpoints/set-aside/`; returns where they went.

        Resuming from an older checkpoint retrains the steps after it: the later checkpoints belong to the
        abandoned steps, and left in place a later plain Resume would pick them up (the highest step) and jump
        back onto that branch. They are moved, not deleted, so nothing the user trained is lost.
        """
        moved = []
        for checkpoint in self.checkpoints():
            if int(checkpoint.name.split("-")[1]) <= step:
                continue
            self.set_aside_dir.mkdir(parents=True, exist_ok=True)
            target, n = self.set_aside_dir / checkpoint.name, 2
            while target.exists():
                target, n = self.set_aside_dir / f"{checkpoint.name}-{n}", n + 1
            os.replace(checkpoint, target)
            moved.append(target)
        return moved

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    def last_event(self) -> dict[str, Any] | None:
        """The last complete event (read from the end of the file)."""
        return read_last_event(self.events_path)

    def status(self) -> str:
        """running | completed | stopped | failed | new, read from the events (and the pid, if unfinished)."""
        # A process's ending is its last event, so a run whose last event is terminal is decided without
        # reading the whole file (the run history and the start-up scan ask this of every run).
        last = self.last_event()
        if last is None:
            return "new"
        if last["event"] == "finished":
            return last.get("status", "completed")
        if last["event"] == "failed":
            return "failed"
        events = self.events()
        if not events:
            return "new"
        # Each training process (the first run and every resume) opens with an event carrying its pid;
        # only the latest process's events decide the status.
        starts = [i for i, event in enumerate(events) if event.get("pid")]
        latest = events[starts[-1]:] if starts else events
        for event in reversed(latest):
            if event["event"] == "finished":
                return event.get("status", "completed")
            if event["event"] == "failed":
                return "failed"
        opening = events[starts[-1]] if starts else None
        if opening is not None and not _pid_alive(opening["pid"], started_by=opening.get("time")):
            return "failed"  # the process vanished without a word: never report it as done
        return "running"

    def training_process(self) -> tuple[int, float | None] | None:
        """(pid, time of its first event) of the run's latest training process, while it is alive."""
        if self.status() != "running":
            return None
        opening = next((e for e in reversed(self.events()) if e.get("pid")), None)
        if opening is None:
            return None
        return int(opening["pid"]), opening.get("time")


def _pid_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether `pid` is a live process (not a zombie) that existed by `started_by` (seconds since the epoch).

    The time check guards against pid reuse: a process created after the run's event is not the run.
    """
    try:
        import psutil
    except ImportError:  # psutil is a dependency; this only keeps the check working without it
        return _pid_exists(pid)
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_by is not None and process.create_time() > float(started_by) + 2.0:
            return False
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True


def _pid_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a run folder: what a run writes first (its config, its events or its lock) is there."""
    path = Path(path)
    return any((path / name).is_file() for name in ("run.toml", "events.jsonl", "run.lock"))


def training_refusal(path: Path) -> str | None:
    """"RUN is training, at step N of M; stop it or wait" when `path` is a run, or a run's adapter folder, that a live
    process trains, else None: the one check of every reader of a run (an eval, an export, a merge). Its adapter is
    an older step's, and its folder is the training process's."""
    path = Path(path).expanduser().absolute()
    run = next((folder for folder in (path, path.parent) if is_run_folder(folder)), None)
    return RunDirectory(run).training_refusal() if run is not None else None


def _slug(text: str) -> str:
    return safe_name(text, "run")


def default_run_name(train_file: str, model: str) -> str:
    """A run's name until the user chooses one: the data's name and the model's ("calls-tr-Qwen2.5-0.5B"), so a run
    says what it trained on what; a Hub id counts by its last part."""
    data = Path(train_file.rstrip("/\\")).stem if train_file else ""
    model_name = Path(model.rstrip("/\\")).name if model else ""
    return _slug("-".join(part for part in (data, model_name) if part))


def renamed_note(wanted: str, run: "RunDirectory") -> str | None:
    """The line that says a run's name was in use and which name the run got instead (None when it got its own)."""
    if run.name == _slug(wanted):
        return None
    return f"A run named {_slug(wanted)} already exists: this run is {run.name}."


class RunStore:
    """All runs under one root folder (default: the user data dir's `runs/`)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else runs_dir()

    def new_run(self, name: str = "", model: str = "") -> RunDirectory:
        """Reserve a fresh, uniquely named run directory."""
        base = _slug(name) if name else f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(Path(model).name or 'model')}"
        self.root.mkdir(parents=True, exist_ok=True)
        candidate, n = self.root / base, 2
        while True:
            try:
                candidate.mkdir()
                return RunDirectory(candidate)
            except FileExistsError:
                candidate, n = self.root / f"{base}-{n}", n + 1

    def runs(self) -> list[RunDirectory]:
        """Every run directory, newest first. The window lists them once per refresh, through
        `sessions.runs.RunsSession.scan`; ask that session rather than calling this again."""
        if not self.root.is_dir():
            return []
        dirs = [RunDirectory(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(dirs, key=lambda r: r.path.stat().st_mtime, reverse=True)

    def rename(self, run: RunDirectory, name: str) -> RunDirectory:
        """Move a run's folder to another name under the root. ValueError for a name that is not a plain folder name
        (letters, digits, '.', '_', '-') or is in use; RunBusyError while the run trains."""
        wanted = name.strip()
        if not wanted or _slug(wanted) != wanted:
            raise ValueError(f"{wanted!r} is not a run name: use letters, digits, '.', '_' and '-'")
        if run.status() == "running" or run.busy_message():
            raise RunBusyError(f"{run.path}: the run is still training; stop it before renaming it")
        target = self.root / wanted
        if target.exists():
            raise ValueError(f"a run named {wanted} already exists")
        run.path.rename(target)
        return RunDirectory(target)

    def delete(self, run: RunDirectory) -> None:
        """Remove a run's folder; a run that is still training is refused (stop it first)."""
        if run.status() == "running" or run.busy_message():
            raise RunBusyError(f"{run.path}: the run is still training; stop it before deleting it")
        shutil.rmtree(run.path)


class RunBusyError(RuntimeError):
    """The run's training process is alive."""
