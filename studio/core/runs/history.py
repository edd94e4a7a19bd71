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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studio.core.runs.store import RunDirectory, RunStore

STEP_SERIES = ("loss", "learning_rate", "grad_norm", "tokens_per_second")


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
class RunSummary:
    """One row of the run history."""

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

    @property
    def run_dir(self) -> RunDirectory:
        return RunDirectory(self.path)


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


def summarize_run(run: RunDirectory, metrics: RunMetrics | None = None) -> RunSummary:
    """The run-history row of one run directory."""
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
    return RunSummary(
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
    )


def summarize_runs(store: RunStore) -> list[RunSummary]:
    """Every run of the store, newest first."""
    return [summarize_run(run) for run in store.runs()]



