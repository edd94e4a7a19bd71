"""What a run looked like, read from its run directory: its curves and a one-line summary.

`RunMetrics` folds events into curves one event at a time, so the Training tab builds its live
plots with it and the Runs view reads a finished run with the very same code. It knows two things
about runs that plain appending would get wrong:

- A resumed run starts a new training process that continues from a checkpoint, which may be older
  than the last step logged (a run killed at step 37 resumes from checkpoint-20). Steps after the
  checkpoint were trained again, so the older points after it are dropped: the curve is the one
  that led to the final adapter.
- "Time" is training time: the sum of each process's span, so a run stopped overnight and resumed
  in the morning does not show a twelve-hour gap.

A run's scores are its latest complete eval's (`<run>/evals/<name>/summary.json`, written by core.eval): per
metric, how many of its replies passed. An eval of several runs is stored under the first of them and names
each column's adapter folder, so every run it scored gets its counts from it. The JSON is read here, not
through core.eval, because runs is the lower layer (eval uses these names for the files it writes).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studio.core.runs.store import RunDirectory, RunStore

STEP_SERIES = ("loss", "learning_rate", "grad_norm", "tokens_per_second")
EVALS_FOLDER = "evals"
EVAL_SUMMARY_FILE = "summary.json"


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


class RunMetrics:
    """A run's curves, built by `feed(event)`; x values exist both as steps and as training seconds."""

    def __init__(self, events: Iterable[dict[str, Any]] = ()):
        self.reset()
        for event in events:
            self.feed(event)

    def reset(self) -> None:
        self.steps: list[int] = []
        self.times: list[float] = []
        self.epochs: list[float] = []
        self.series: dict[str, list[float]] = {name: [] for name in STEP_SERIES}
        self.eval_steps: list[int] = []
        self.eval_times: list[float] = []
        self.eval_loss: list[float] = []
        self.total_steps: int | None = None
        self.start_step = 0
        self.resumed_from: str | None = None
        self.ending: dict[str, Any] | None = None  # the last finished/failed event
        self.first_time: float | None = None
        self._process_pid: int | None = None
        self._process_start: float | None = None
        self._process_first_step: tuple[float, int] | None = None  # (time, step) of this process's first step
        self._offset = 0.0  # training seconds of the earlier processes
        self._last_time: float | None = None

    # --- feeding -------------------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> str:
        """Take one event; returns "step" or "eval" (a point was added), "truncated" (points were
        dropped: redraw everything) or "" (nothing to plot)."""
        kind = event.get("event")
        now = event.get("time")
        if isinstance(now, (int, float)) and now > 0:
            self._track_time(float(now), event.get("pid"))
        if kind == "started":
            self.total_steps = event.get("total_steps") or None
            self.start_step = int(event.get("start_step") or 0)
            self.resumed_from = event.get("resumed_from")
            self.ending = None
            if self._truncate_after(self.start_step):
                return "truncated"
        elif kind == "step" and event.get("step") is not None:
            step = int(event["step"])
            self.steps.append(step)
            self.times.append(self.training_seconds_at(now))
            self.epochs.append(_number(event.get("epoch")))
            for name in STEP_SERIES:
                self.series[name].append(_number(event.get(name)))
            if self._process_first_step is None and isinstance(now, (int, float)):
                self._process_first_step = (float(now), step)
            return "step"
        elif kind == "eval" and event.get("eval_loss") is not None:
            self.eval_steps.append(int(event.get("step") or 0))
            self.eval_times.append(self.training_seconds_at(now))
            self.eval_loss.append(_number(event["eval_loss"]))
            return "eval"
        elif kind in ("finished", "failed"):
            self.ending = event
        return ""

    def _track_time(self, now: float, pid: Any) -> None:
        if self.first_time is None:
            self.first_time = now
        if pid is not None and pid != self._process_pid:
            # A new training process (the first one, or a resume) opens with an event carrying its pid.
            if self._process_start is not None and self._last_time is not None:
                self._offset += max(0.0, self._last_time - self._process_start)
            self._process_pid, self._process_start = pid, now
            self._process_first_step = None
            self.ending = None
            self._last_time = now
        if self._process_start is None:
            self._process_start = now
        if self._last_time is None or now > self._last_time:
            self._last_time = now

    def _truncate_after(self, step: int) -> bool:
        keep = sum(1 for s in self.steps if s <= step)
        keep_eval = sum(1 for s in self.eval_steps if s <= step)
        if keep == len(self.steps) and keep_eval == len(self.eval_steps):
            return False
        del self.steps[keep:], self.times[keep:], self.epochs[keep:]
        for values in self.series.values():
            del values[keep:]
        del self.eval_steps[keep_eval:], self.eval_times[keep_eval:], self.eval_loss[keep_eval:]
        return True

    # --- reading ---------------------------------------------------------------------------------------
    def training_seconds_at(self, when: float | None) -> float:
        """Training seconds (all processes so far) at wall-clock time `when`."""
        if when is None or self._process_start is None:
            return self._offset
        return self._offset + max(0.0, float(when) - self._process_start)

    def elapsed(self, now: float | None = None) -> float:
        """Training seconds so far: up to `now` while live, else up to the last event."""
        return self.training_seconds_at(now if now is not None else self._last_time)

    @property
    def current_step(self) -> int:
        return self.steps[-1] if self.steps else self.start_step

    @property
    def current_epoch(self) -> float | None:
        return self.epochs[-1] if self.epochs and not math.isnan(self.epochs[-1]) else None

    def eta(self) -> float | None:
        """Seconds left at this process's pace so far; None until two steps of this process are known."""
        if not self.total_steps or self._process_first_step is None or not self.steps or self._last_time is None:
            return None
        first_time, first_step = self._process_first_step
        done = self.steps[-1] - first_step
        if done <= 0:
            return None
        per_step = (self._last_time - first_time) / done
        return max(0.0, (self.total_steps - self.steps[-1]) * per_step)

    @property
    def final_loss(self) -> float | None:
        finite = [v for v in self.series["loss"] if math.isfinite(v)]
        return finite[-1] if finite else None

    @property
    def best_loss(self) -> float | None:
        finite = [v for v in self.series["loss"] if math.isfinite(v)]
        return min(finite) if finite else None

    @property
    def best_eval_loss(self) -> float | None:
        finite = [v for v in self.eval_loss if math.isfinite(v)]
        return min(finite) if finite else None


@dataclass(frozen=True)
class RunRow:
    """One row of the Runs view: a run as the history lists it (not what a model card states about a run, which is
    `runs.record.RunRecord`)."""

    path: Path
    name: str
    model: str
    dataset: str
    status: str  # running | completed | stopped | failed | new
    step: int | None
    total_steps: int | None
    final_loss: float | None
    best_loss: float | None
    best_eval_loss: float | None
    duration_s: float | None
    adapter_bytes: int | None
    started_at: float | None
    message: str = ""  # why it failed, or how it ended
    failure_kind: str | None = None
    checkpoint_steps: list[int] = field(default_factory=list)
    scores: RunScores | None = None
    """The latest complete eval that scored this run's adapter; None when none did."""
    read_fully: bool = True
    """False for a `quick_row`: the numbers read from the whole events file are not there yet."""

    @property
    def run_dir(self) -> RunDirectory:
        return RunDirectory(self.path)


@dataclass(frozen=True)
class MetricCount:
    """How many of a model's replies one metric passed."""

    passed: int
    total: int
    mean_score: float | None = None

    @property
    def fraction(self) -> float | None:
        return self.passed / self.total if self.total else None

    @property
    def text(self) -> str:
        return f"{self.passed}/{self.total}"


@dataclass(frozen=True)
class RunScores:
    """One eval's counts for one run (its column in that eval)."""

    eval_name: str
    eval_set: str
    folder: Path
    written_at: float
    """When its summary.json was written (the newest eval is the run's scores)."""
    column: str
    metrics: dict[str, MetricCount]
    """In the eval's metric order."""

    def describe(self) -> str:
        """The eval in words, for a tooltip."""
        import datetime

        when = datetime.datetime.fromtimestamp(self.written_at).strftime("%Y-%m-%d %H:%M")
        return f"eval {self.eval_name} ({when}) on {self.eval_set}"


@dataclass(frozen=True)
class EvalSummary:
    """A summary.json as read from an evals folder."""

    path: Path
    written_at: float
    document: dict[str, Any]

    def column_of(self, adapter_dir: Path) -> str | None:
        """The column whose replies came from `adapter_dir`, if this eval scored it."""
        wanted = _resolved(adapter_dir)
        for column, entry in (self.document.get("models") or {}).items():
            source = entry.get("source") if isinstance(entry, dict) else None
            if source and _resolved(Path(source)) == wanted:
                return column
        return None

    def scores(self, column: str) -> RunScores:
        entry = self.document["models"][column]
        counts = {}
        for name in self.document.get("metric_names") or list(entry.get("metrics") or {}):
            metric = (entry.get("metrics") or {}).get(name)
            if isinstance(metric, dict) and isinstance(metric.get("passed"), int) and isinstance(metric.get("total"), int):
                counts[name] = MetricCount(metric["passed"], metric["total"], metric.get("mean_score"))
        return RunScores(eval_name=str(self.document.get("name") or self.path.parent.name),
                         eval_set=str(self.document.get("eval_set") or ""), folder=self.path.parent,
                         written_at=self.written_at, column=column, metrics=counts)


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(os.path.abspath(path))


def read_eval_summaries(run_dir: Path) -> list[EvalSummary]:
    """The complete evals stored under a run (`evals/*/summary.json`), oldest first; an unreadable or unfinished
    one (cancelled, or being written) is left out."""
    found = []
    for path in sorted(Path(run_dir, EVALS_FOLDER).glob(f"*/{EVAL_SUMMARY_FILE}")):
        try:
            written_at = path.stat().st_mtime
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(document, dict) and document.get("complete") and isinstance(document.get("models"), dict):
            found.append(EvalSummary(path, written_at, document))
    found.sort(key=lambda summary: (summary.written_at, str(summary.path)))
    return found


def latest_scores(run: RunDirectory, evals: Iterable[EvalSummary] | None = None) -> RunScores | None:
    """The newest of `evals` (default: the run's own) that scored the run's adapter, as that column's counts."""
    evals = read_eval_summaries(run.path) if evals is None else evals
    latest = None
    for summary in evals:
        column = summary.column_of(run.adapter_dir)
        if column is not None and (latest is None or summary.written_at >= latest[0].written_at):
            latest = (summary, column)
    return latest[0].scores(latest[1]) if latest is not None else None


def score_metrics(rows: Iterable[RunRow]) -> list[str]:
    """The metrics any of these runs has a score for, in the order they first appear: the score columns."""
    names: list[str] = []
    for row in rows:
        for name in (row.scores.metrics if row.scores is not None else ()):
            if name not in names:
                names.append(name)
    return names


def _read_config_fields(path: Path) -> tuple[str, str]:
    """(model, dataset) as recorded in run.toml, without validating it (history must show broken runs too)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "", ""
    model = str((data.get("model") or {}).get("name_or_path", ""))
    dataset = str((data.get("data") or {}).get("train_file", ""))
    return model, dataset


def _folder_bytes(folder: Path) -> int | None:
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_metrics(run: RunDirectory) -> RunMetrics:
    """The curves of a stored run."""
    return RunMetrics(run.events())


def run_row(run: RunDirectory, metrics: RunMetrics | None = None,
            evals: Iterable[EvalSummary] | None = None) -> RunRow:
    """The run-history row of one run directory; its scores come from `evals` (default: its own evals folder)."""
    metrics = metrics if metrics is not None else run_metrics(run)
    model, dataset = _read_config_fields(run.config_path)
    status = run.status()
    ending = metrics.ending or {}
    if status == "failed":
        message = ending.get("message") or "the training process vanished without a final event"
    elif status == "running":
        message = "training"
    else:
        message = ""
    adapter = run.adapter_dir
    return RunRow(
        path=run.path,
        name=run.name,
        model=model,
        dataset=dataset,
        status=status,
        step=metrics.current_step if (metrics.steps or metrics.start_step) else None,
        total_steps=metrics.total_steps,
        final_loss=ending.get("final_loss") if ending.get("final_loss") is not None else metrics.final_loss,
        best_loss=metrics.best_loss,
        best_eval_loss=metrics.best_eval_loss,
        duration_s=metrics.elapsed(time.time() if status == "running" else None) if metrics.first_time else None,
        adapter_bytes=_folder_bytes(adapter) if (adapter / "adapter_config.json").is_file() else None,
        started_at=metrics.first_time,
        message=message,
        failure_kind=ending.get("kind") if status == "failed" else None,
        checkpoint_steps=[int(p.name.split("-")[1]) for p in run.checkpoints()],
        scores=latest_scores(run, evals),
    )


def run_rows(store: RunStore) -> list[RunRow]:
    """Every run of the store, newest first, each scored by the newest eval in the store that scored it."""
    return read_rows(store.runs())


def read_rows(runs: list[RunDirectory]) -> list[RunRow]:
    """These runs' rows, in their order, each scored by the newest eval stored under any of them that scored it."""
    evals = [summary for run in runs for summary in read_eval_summaries(run.path)]
    return [run_row(run, evals=evals) for run in runs]


def quick_row(run: RunDirectory) -> RunRow:
    """A run's row from what reads at once: its status (from the events file's last event while it is terminal),
    model and data (run.toml), adapter and checkpoints. Its curve's numbers, times and scores are unknown (None)
    until `run_row` reads the whole events file."""
    model, dataset = _read_config_fields(run.config_path)
    adapter = run.adapter_dir
    return RunRow(path=run.path, name=run.name, model=model, dataset=dataset, status=run.status(), step=None,
                  total_steps=None, final_loss=None, best_loss=None, best_eval_loss=None, duration_s=None,
                  adapter_bytes=_folder_bytes(adapter) if (adapter / "adapter_config.json").is_file() else None,
                  started_at=None, checkpoint_steps=[int(p.name.split("-")[1]) for p in run.checkpoints()],
                  read_fully=False)
