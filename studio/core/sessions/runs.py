"""The runs folder as the window shows it: one scan, read by every tab.

`RunsSession.scan` is the only place the studio lists the runs folder. Its rows (newest first) feed the Runs view's
table, the runs Evaluate and Chat offer (those with an adapter), the run the window re-attaches at launch and the
question "is something training now". `apply` takes a scan's rows on the observers' thread and tells every observer
what changed: a new run, an ended run, a rename, a deletion. What the window itself does to a run (start one, end
one, rename or delete one here) updates its row without listing the folder again.

The window runs `scan` on a background thread (`set_scanner`); without a scanner (tests, a tab on its own) a
refresh scans at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio.core.config.settings import ConfigError, RunConfig, load_config, save_config
from studio.core.metrics.registry import METRICS
from studio.core.runs.history import (
    RunMetrics, RunRow, quick_row, read_rows, run_metrics, run_row, run_rows, score_metrics,
)
from studio.core.runs.store import RunBusyError, RunDirectory, RunStore

__all__ = ["RunActionError", "RunRow", "RunsChange", "RunsSession", "rename_run", "score_title"]

ENDED = ("completed", "stopped", "failed")
"""A run with one of these statuses trains no more."""


class RunActionError(Exception):
    """Why an action on a run (open its settings, rename, delete) could not be done, in one line."""


@dataclass(frozen=True)
class RunsChange:
    """What one scan, or one action of the window, changed in the list of runs."""

    added: tuple[Path, ...] = ()
    ended: tuple[RunRow, ...] = ()
    """Runs that stopped training since they were last seen (or that the window started): completed, stopped or
    failed, as their row says now."""
    renamed: tuple[tuple[Path, Path], ...] = ()
    """(old folder, new folder) of the runs renamed here."""
    removed: tuple[Path, ...] = ()
    updated: tuple[Path, ...] = ()
    """Runs still listed whose row reads differently (steps, scores, status)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.ended or self.renamed or self.removed or self.updated)


def score_title(metric: str) -> str:
    """A score column's header: the metric's title ("Tool call")."""
    info = METRICS.get(metric)
    return info.title if info is not None else metric


def rename_run(store: RunStore, run: RunDirectory, name: str) -> RunDirectory:
    """Give a run the name the user chose: its folder moves (RunStore.rename's refusals) and its run.toml's name
    follows, so "Open config" and a resume call it by its new name. Returns the renamed run."""
    renamed = store.rename(run, name)
    try:
        config = load_config(renamed.config_path)
    except ConfigError:
        return renamed  # a run without a readable config keeps what it has: only the folder moved
    config.name = renamed.name
    save_config(config, renamed.config_path)
    return renamed


class RunsSession:
    """Every run under one RunStore, as last scanned, with change notification."""

    def __init__(self, store: RunStore | None = None):
        self.store = store if store is not None else RunStore()
        self.rows: list[RunRow] = []
        """Newest first, as the last scan (and the window's own actions since) found them."""
        self.scans = 0
        """How many times the runs folder was listed."""
        self.generation = 0
        """Counts the changes of `rows`: a background scan begun at an older generation missed a change."""
        self.training_here: Path | None = None
        """The run this window's Training tab is running (one at a time)."""
        self._observers: list[Callable[[RunsChange], None]] = []
        self._live: set[Path] = set()  # runs known to be training: their end is reported even if no scan saw them run
        self._scanner: Callable[[], None] | None = None
        self._metrics: dict[Path, tuple[tuple[int, int], RunMetrics]] = {}

    @property
    def root(self) -> Path:
        return self.store.root

    def subscribe(self, observer: Callable[[RunsChange], None]) -> Callable[[], None]:
        """Call `observer(change)` after every scan and every action; returns the unsubscribe function."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    # --- scanning ------------------------------------------------------------------------------------------
    def scan(self) -> list[RunRow]:
        """List and read the runs folder (any thread: it changes nothing here; `apply` takes the result)."""
        self.scans += 1
        return run_rows(self.store)

    def apply(self, rows: list[RunRow], *, renamed: tuple[tuple[Path, Path], ...] = (),
              since: int | None = None) -> RunsChange | None:
        """Take a scan's rows and tell every observer what changed since the rows held before. A scan begun at
        generation `since`, before a run was renamed, deleted, started or ended here, is stale: None, nothing
        taken (scan again)."""
        if since is not None and since != self.generation:
            return None
        before = {row.path: row for row in self.rows}
        for old, new in renamed:
            if old in before:
                before[new] = before.pop(old)
        after = {row.path: row for row in rows}
        added = tuple(path for path in after if path not in before)
        removed = tuple(path for path in before if path not in after and path not in dict(renamed))
        ended = tuple(row for path, row in after.items() if row.status in ENDED
                      and (path in self._live or (path in before and before[path].status not in ENDED)))
        self._live = {path for path, row in after.items() if row.status not in ENDED and path in self._live}
        self._live |= {path for path, row in after.items() if row.status == "running"}
        updated = tuple(path for path in after if path in before and after[path] != before[path])
        self.rows = list(rows)
        self.generation += 1
        for path in removed:
            self._metrics.pop(path, None)
        change = RunsChange(added=added, ended=ended, renamed=tuple((o, n) for o, n in renamed if n in after),
                            removed=removed, updated=updated)
        for observer in list(self._observers):
            observer(change)
        return change

    def refresh_now(self) -> RunsChange:
        """Scan on this thread and notify."""
        return self.apply(self.scan())

    def scan_quickly(self) -> RunsChange:
        """The window's launch: list the runs folder and read each run's quick row (status, model, adapter) on this
        thread, so a run still training is known at once; `read_fully` then completes the rows in the background
        without listing the folder again."""
        self.scans += 1
        return self.apply([quick_row(run) for run in self.store.runs()])

    def read_fully(self, rows: list[RunRow]) -> list[RunRow]:
        """These rows read whole (curves, times, scores), for `apply` (any thread; no listing of the folder)."""
        return read_rows([row.run_dir for row in rows if row.path.is_dir()])  # one deleted meanwhile is gone

    def set_scanner(self, scanner: Callable[[], None] | None) -> None:
        """How `request_refresh` scans: the window's background task (which ends in `apply`)."""
        self._scanner = scanner

    def request_refresh(self) -> None:
        """Re-read the runs folder: in the background where the window set a scanner, else now."""
        if self._scanner is not None:
            self._scanner()
        else:
            self.refresh_now()

    # --- reading -------------------------------------------------------------------------------------------
    def score_columns(self) -> list[str]:
        """The metrics any listed run has a score for, in the order they first appear."""
        return score_metrics(self.rows)

    def finished_runs(self) -> list[RunRow]:
        """The runs with an adapter to evaluate, chat with or export, newest first."""
        return [row for row in self.rows if row.adapter_bytes is not None]

    def running_runs(self) -> list[RunDirectory]:
        """The runs whose training process is alive now (e.g. kept training after the window closed)."""
        return [row.run_dir for row in self.rows if row.status == "running" and row.run_dir.status() == "running"]

    def training_in_progress(self) -> bool:
        """Whether any listed run still trains (it then holds the GPU)."""
        return self.training_here is not None or bool(self.running_runs())

    def latest_adapter_for(self, base: str) -> Path | None:
        """The adapter of the newest finished run trained on `base`."""
        return next((row.run_dir.adapter_dir for row in self.finished_runs() if row.model == base), None)

    def metrics(self, path: Path) -> RunMetrics:
        """A run's curves, read again only when its events file changed."""
        run = RunDirectory(path)
        try:
            stat = run.events_path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = (0, 0)
        cached = self._metrics.get(run.path)
        if cached is None or cached[0] != key:
            cached = (key, run_metrics(run))
            self._metrics[run.path] = cached
        return cached[1]

    def settings_of(self, path: Path) -> RunConfig:
        """A run's run.toml; RunActionError saying why it cannot be read."""
        try:
            return load_config(RunDirectory(path).config_path)
        except ConfigError as error:
            raise RunActionError(str(error)) from error

    def continue_with(self, path: Path, method: str) -> RunConfig:
        """A new run's config that trains this run's adapter further with `method` (sessions.continuation);
        RunActionError saying why it cannot (no config, no finished adapter)."""
        from studio.core.sessions.continuation import continue_config

        try:
            return continue_config(path, method)
        except ConfigError as error:
            raise RunActionError(str(error)) from error

    # --- what the window does to runs ----------------------------------------------------------------------
    def run_started(self, path: Path) -> RunsChange:
        """The Training tab started (or re-attached to) a run: its row is read and shown as training."""
        path = Path(path)
        self.training_here = path
        self._live.add(path)
        return self._reread(path)

    def run_ended(self, path: Path) -> RunsChange:
        """The Training tab's run ended: its row is read again and reported in `ended`."""
        path = Path(path)
        if self.training_here == path:
            self.training_here = None
        self._live.add(path)
        return self._reread(path)

    def rename(self, path: Path, name: str) -> RunDirectory:
        """Rename a run (folder and run.toml); RunActionError for a refused name or a run still training."""
        run = RunDirectory(path)
        try:
            renamed = rename_run(self.store, run, name)
        except (RunBusyError, ValueError, OSError) as error:
            raise RunActionError(str(error)) from error
        self._metrics.pop(run.path, None)
        rows = [run_row(renamed) if row.path == run.path else row for row in self.rows]
        self.apply(rows, renamed=((run.path, renamed.path),))
        return renamed

    def delete(self, paths: list[Path]) -> tuple[list[str], list[str]]:
        """Delete these runs' folders; returns (the names deleted, why the others were not)."""
        deleted, refused, gone = [], [], set()
        for path in map(Path, paths):
            run = RunDirectory(path)
            try:
                self.store.delete(run)
            except (RunBusyError, OSError) as error:
                refused.append(f"Cannot delete {run.name}: {error}")
                continue
            deleted.append(run.name)
            gone.add(run.path)
        if gone:
            self.apply([row for row in self.rows if row.path not in gone])
        return deleted, refused

    def _reread(self, path: Path) -> RunsChange:
        """One run's row read again (no listing of the folder); a run not listed yet goes first."""
        row = run_row(RunDirectory(path))
        rows = [row if existing.path == path else existing for existing in self.rows]
        if all(existing.path != path for existing in self.rows):
            rows.insert(0, row)
        return self.apply(rows)
