"""The Training tab's session: starting a run, the run's events folded into what the tab and its plots show.

`TrainingSession.start(config)` is Start: the config is validated and preflight-checked once here (the training
child checks its run.toml once more, in its own process: `finetune-studio train` is also a command of its own),
the run folder is made and run.toml written once. The supervisor's events go through `feed`: `TrainingSeries`
folds them into the metric series the plots draw (the loss, eval loss, held-out scores, a method's own metrics),
and the session into the status line, the progress text, the failure and the retry offer. The plots and the tab
are views: they draw the session's series and texts when it notifies them, and fold nothing themselves.

Listeners: `subscribe(fn)` for the status and progress (fn()), `series.subscribe(fn)` for the plots
(fn(change): "step", "eval", "score" or "reset"), and `run_started` / `run_ended`, plain callback lists the window
connects to ("a run started", "a run ended" for the Runs view and the other tabs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.methods.registry import all_plots, plot_of
from studio.core.methods.spec import LivePlot
from studio.core.system.tasks import TaskState
from studio.core.config.settings import ConfigError, RunConfig, copy_config, load_config, save_config
from studio.core.runs.events import (CheckpointEvent, EvaluatingEvent, Event, FailedEvent, LogEvent, StartedEvent,
                                     StepEvent, parse_event)
from studio.core.runs.history import RunMetrics
from studio.core.runs.store import RunDirectory, RunStore, default_run_name, renamed_note
from studio.core.system.units import format_duration
from studio.core.train.scores import ScorePoint, ScoreSeries
from studio.core.train.supervisor import TrainingSupervisor

# RunConfig, RunDirectory and TrainingSupervisor are the tab's and its Qt supervisor's too: they reach core here.
__all__ = ["METHOD_PLOTS", "MemoryReadings", "MethodPlot", "PREPARATION_PHASES", "RunConfig", "RunDirectory", "Status",
           "TrainingSeries", "TrainingSession", "TrainingSupervisor", "default_telemetry", "retry_name"]

PREPARATION_PHASES = ("data", "libraries", "tokenizer", "tokenising", "model")
"""The `phase` of the log events a training process writes before its first step (run_training), in order."""

_SETTING_NAMES = {"max_length": "max length", "per_device_train_batch_size": "batch size",
                  "gradient_checkpointing": "gradient checkpointing", "r": "LoRA rank", "quantization": "base weights"}


# --- the methods' own curves: which metric keys each method plots come from the methods wing -------------------------
MethodPlot = LivePlot
METHOD_PLOTS = all_plots()
"""Every method's live plots once each, in the methods' order: a run's events name no method, so a metric key finds
its plot among them (a GRPO reward key, rewards/<fn>/mean, is drawn by the per-function plot only)."""


def method_plot_of(key: str) -> LivePlot | None:
    return plot_of(key)


def _finite_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TrainingSeries:
    """A run's curves, folded from its events one at a time: the plots draw these and nothing else.

    `metrics` (RunMetrics: loss, learning rate, grad norm, tokens/s, eval loss, steps and training seconds; the
    same code the Runs view reads finished runs with), `scores` (held-out scores while training) and each logged
    step's method metrics. A resume that trains earlier steps again drops the later points ("reset": redraw all).
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []
        self._clear()

    def _clear(self) -> None:
        self.metrics, self.scores = RunMetrics(), ScoreSeries()
        self.method_steps: dict[int, dict[str, float]] = {}  # step → its method metrics (a resumed step's newest)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """`listener(change)` after each change: "step", "eval", "score" (one point appended) or "reset"."""
        self._listeners.append(listener)

    def _notify(self, change: str) -> None:
        for listener in list(self._listeners):
            listener(change)

    def _fold(self, event: Mapping[str, Any]) -> list[str]:
        event = parse_event(event)
        change = self.metrics.feed(event)
        scored = self.scores.feed(event, self.metrics.training_seconds_at(event.time))
        if change == "truncated":
            kept = set(self.metrics.steps)
            self.method_steps = {s: v for s, v in self.method_steps.items() if s in kept}
        elif change == "step" and isinstance(event, StepEvent):
            values = _finite_values(event.metrics)
            if values or self.method_steps:
                self.method_steps[self.metrics.steps[-1]] = values
        if change == "truncated" or scored == "truncated":
            return ["reset"]
        return [c for c in (change if change in ("step", "eval") else "", "score" if scored == "point" else "") if c]

    def feed(self, event: Mapping[str, Any]) -> None:
        for change in self._fold(event):
            self._notify(change)

    def feed_all(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Replace everything with a whole run's events (one "reset", not a notification per point)."""
        self._clear()
        for event in events:
            self._fold(event)
        self._notify("reset")

    def reset(self) -> None:
        self._clear()
        self._notify("reset")

    # --- reading --------------------------------------------------------------------------------------------------
    def xs(self, by_time: bool) -> list[float]:
        return list(self.metrics.times if by_time else self.metrics.steps)

    def eval_xs(self, by_time: bool) -> list[float]:
        return list(self.metrics.eval_times if by_time else self.metrics.eval_steps)

    def score_xs(self, by_time: bool) -> list[float]:
        return [p.seconds if by_time else p.step for p in self.scores.points]

    @property
    def score_points(self) -> list[ScorePoint]:
        return self.scores.points

    def method_series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one method metric key."""
        xs = sorted(s for s, values in self.method_steps.items() if key in values)
        return [float(x) for x in xs], [self.method_steps[x][key] for x in xs]

    def method_plots(self) -> list[tuple[MethodPlot, list[str]]]:
        """The method plots this run has points for, in order, each with its metric keys."""
        keys = sorted({k for values in self.method_steps.values() for k in values})
        groups = [(spec, [k for k in keys if method_plot_of(k) is spec]) for spec in METHOD_PLOTS]
        return [(spec, mine) for spec, mine in groups if mine]


class MemoryReadings:
    """The run's memory over time, as the memory panel draws it: the card's use and the training process's own (a
    GPU reading), or the process's RAM (a host reading); the peaks since the run's process began; the latest
    reading, and whether it is nearly full."""

    #: Fraction of the card (or host RAM) above which memory shows as a warning.
    WARNING_FRACTION = 0.95

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.times: list[float] = []
        self.card_used: list[float] = []  # bytes; NaN for a host reading
        self.process_used: list[float] = []  # bytes; NaN where the driver does not say
        self.latest: Any = None
        self.total_bytes: int | None = None
        self.reset_peak()

    def reset_peak(self) -> None:
        """A new process: its peaks start from nothing."""
        self.peak_bytes: int | None = None  # the card's use (GPU) or the process's RSS (host)
        self.process_peak_bytes: int | None = None  # the process's own use of the card (GPU)

    def add(self, reading: Any) -> None:
        """One GpuReading or HostReading (core.system.gpu)."""
        self.latest = reading
        process: int | None
        if hasattr(reading, "card_used_bytes"):
            used, total, process = reading.card_used_bytes, reading.card_total_bytes, reading.process_used_bytes
            self.card_used.append(float(used))
            self.process_used.append(math.nan if process is None else float(process))
        else:
            used, total, process = reading.process_rss_bytes, reading.host_total_bytes, None
            self.card_used.append(math.nan)
            self.process_used.append(float(used))
        self.times.append(float(reading.time))
        self.peak_bytes = used if self.peak_bytes is None else max(self.peak_bytes, used)
        if process is not None:
            self.process_peak_bytes = process if self.process_peak_bytes is None else max(self.process_peak_bytes,
                                                                                          process)
        self.total_bytes = total or None

    @property
    def used_bytes(self) -> int | None:
        reading = self.latest
        if reading is None:
            return None
        return reading.card_used_bytes if hasattr(reading, "card_used_bytes") else reading.process_rss_bytes

    @property
    def nearly_full(self) -> bool:
        used = self.used_bytes
        return bool(self.total_bytes) and used is not None and used / self.total_bytes > self.WARNING_FRACTION


@dataclass(frozen=True)
class Status:
    """The status line: its word (running, failed, ...), its text and what to do (may be empty)."""

    word: str
    text: str
    hint: str = ""


def retry_name(run_name: str) -> str:
    """demo → demo-retry; a retry of demo-retry (or of the folder demo-retry-2) is demo-retry again, which the
    run store numbers, never demo-retry-retry."""
    return re.sub(r"-retry(-\d+)?$", "", run_name) + "-retry"


def _describe_settings(settings: Mapping[str, Any]) -> str:
    parts = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append(f"{_SETTING_NAMES.get(key, key)} {value}")
    return ", ".join(parts)


class TrainingSession:
    """One run at a time, as the Training tab shows it: started here (or resumed, or re-attached), its events
    folded into `series` and the texts below, its ending told."""

    def __init__(self, store: RunStore):
        self.store = store
        self.series = TrainingSeries()
        self.memory = MemoryReadings()
        self.run_dir: RunDirectory | None = None
        self.status = Status("ready", "Ready. Press Start to train with the settings of the Config tab.")
        self.last_status: str | None = None  # how the latest run ended
        self.last_failure: FailedEvent | None = None  # the `failed` event of the latest process, if any
        self.last_checkpoint_step: int | None = None
        self.evaluating: EvaluatingEvent | None = None  # the evaluation under way
        self.live_pid: int | None = None  # the supervised process, once its first event names it
        self.stopping = False
        self.closing_text = ""  # how the progress bar sums up the run that ended
        self.renamed: str | None = None  # the note of a wanted name in use (the store added a suffix)
        self._listeners: list[Callable[[], None]] = []
        self.run_started: list[Callable[[RunDirectory], None]] = []
        self.run_ended: list[Callable[[RunDirectory | None, str, str], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _set_status(self, word: str, text: str, hint: str = "") -> None:
        self.status = Status(word, text, hint)
        for listener in list(self._listeners):
            listener()

    # --- starting -------------------------------------------------------------------------------------------------
    def start(self, config: RunConfig) -> RunDirectory | None:
        """Start: validate and preflight the config (once), make the run folder and write its run.toml (once).
        The run folder, or None with the refusal in the status."""
        from studio.core.data.issues import DataError
        from studio.core.train.preflight import check_run, refusal_line

        config = copy_config(config)
        try:
            config.validate()
            check_run(config)  # the CLI's preflight: nothing the run would refuse becomes a failed run
        except ConfigError as error:
            self._set_status("not started", f"Cannot start: {error}")
            return None
        except DataError as error:
            line = refusal_line(error, skip_bad_rows="tick Skip bad rows when training on the Dataset tab")
            self._set_status("not started", f"Cannot start: {line}")
            return None
        wanted = config.name or default_run_name(config.data.train_file, config.model.name_or_path)
        run_dir = self.store.new_run(wanted, config.model.name_or_path)
        config.name = run_dir.name
        save_config(config, run_dir.config_path)
        self.renamed = renamed_note(wanted, run_dir)
        return run_dir

    def can_resume(self, run_dir: RunDirectory | None, checkpoint: Path | None = None) -> bool:
        """Whether `run_dir` can be resumed now; the refusal goes to the status."""
        if run_dir is None:
            return False
        if (busy := run_dir.busy_message()) is not None:
            # A second writer would interleave its events with the live run's and set its checkpoints aside.
            self._set_status("not started", f"Cannot resume: {busy}")
            return False
        if checkpoint is None and run_dir.latest_checkpoint() is None:
            self._set_status("failed", f"Run {run_dir.name} has no checkpoint to resume from.")
            return False
        return True

    def supervisor(self, run_dir: RunDirectory, **kwargs: Any) -> TrainingSupervisor:
        return TrainingSupervisor(run_dir, **kwargs)

    def attachable(self, run_dir: RunDirectory) -> TrainingSupervisor | None:
        """A supervisor of the run's live process (kept training after a window closed), or None."""
        return TrainingSupervisor.attach(run_dir)

    def began(self, run_dir: RunDirectory, verb: str = "Starting") -> None:
        """A run's process is being supervised from now on; its events replay from the file's first line."""
        self.run_dir = run_dir
        self.last_status, self.last_failure, self.last_checkpoint_step = None, None, None
        self.evaluating, self.live_pid, self.stopping = None, None, False
        self.series.reset()
        note, self.renamed = (self.renamed if verb == "Starting" else None), None
        self._set_status("running", f"{note} Starting run {run_dir.name}…" if note else f"{verb} run {run_dir.name}…")
        for listener in list(self.run_started):
            listener(run_dir)

    def stop_requested(self) -> None:
        self.stopping = True
        self._set_status("running", "Stopping: saving a checkpoint and the adapter…")

    # --- the run's events -----------------------------------------------------------------------------------------
    def feed(self, event: Mapping[str, Any]) -> Event:
        """Take one event of the run (a dict as written, or typed); returns it typed."""
        event = parse_event(event)
        self.series.feed(event)
        if event.pid is not None:
            self.last_failure = None  # a new process: an earlier one's failure is history
            self.live_pid = event.pid
        if isinstance(event, EvaluatingEvent):
            self.evaluating = event
        elif not isinstance(event, LogEvent):
            self.evaluating = None  # the evaluation ended (its result, the next step, a save or the end)
        if isinstance(event, LogEvent):
            if not self.stopping:
                message = event.message
                if event.phase in PREPARATION_PHASES:
                    number = PREPARATION_PHASES.index(event.phase) + 1
                    message = f"Preparing the run ({number} of {len(PREPARATION_PHASES)}): {message}"
                self._set_status("running", message)
        elif isinstance(event, StartedEvent):
            if self.last_checkpoint_step is not None and self.last_checkpoint_step > event.start_step:
                # Resumed from an older checkpoint: the later saves were of the steps retrained now.
                self.last_checkpoint_step = event.start_step
            start = self.series.metrics.start_step
            resumed = f" from step {start}" if start else ""
            self._set_status("running", f"Training {self.run_dir.name if self.run_dir else ''}{resumed}")
        elif isinstance(event, CheckpointEvent):
            self.last_checkpoint_step = event.step
        elif isinstance(event, FailedEvent):
            self.last_failure = event
        return event

    # --- progress -------------------------------------------------------------------------------------------------
    def details_text(self) -> str:
        metrics, details = self.series.metrics, []
        if metrics.final_loss is not None:
            details.append(f"loss {metrics.final_loss:.4f}")
        if metrics.eval_loss:
            details.append(f"eval {metrics.eval_loss[-1]:.4f}")
        if scores := self.series.score_points:
            details.append(f"held-out {scores[-1].label}")
        if self.last_checkpoint_step is not None:
            details.append(f"saved at {self.last_checkpoint_step}")
        return " · ".join(details)

    def progress_text(self, now: float, *, running: bool) -> str | None:
        """The progress bar's text while a run goes or after it ended (None: leave it as it is)."""
        metrics = self.series.metrics
        if not metrics.total_steps:
            return f"starting… {format_duration(metrics.elapsed(now))}" if running else None
        parts = [f"step {metrics.current_step}/{metrics.total_steps}"]
        if metrics.current_epoch is not None:
            parts.append(f"epoch {metrics.current_epoch:.2f}")
        live = running and metrics.ending is None
        parts.append(format_duration(metrics.elapsed(now if live else None)))
        eta = metrics.eta()
        if eta is not None and live:
            parts.append(f"ETA {format_duration(eta)}")
        if self.evaluating is not None and live:
            done, total = self.evaluating.done, self.evaluating.total
            parts.append(f"evaluating {done}/{total} batches" if total
                         else f"evaluating, {done} batch" + ("" if done == 1 else "es"))
        return " · ".join(parts)

    # --- the ending -----------------------------------------------------------------------------------------------
    def ended(self, status: str, message: str) -> None:
        """The process is gone: the status and its texts (`closing_text`: the progress bar's), then `run_ended`."""
        metrics, run_dir = self.series.metrics, self.run_dir
        name = run_dir.name if run_dir else "run"
        duration = format_duration(metrics.elapsed())
        self.evaluating, self.stopping, self.live_pid = None, False, None
        if status == "failed":
            closing = f"failed at step {metrics.current_step} · {duration}"
            self.last_status = status
            self._set_status("failed", self.failure_text(name, message), self.failure_hint())
        elif status == "stopped":
            closing = f"stopped at step {metrics.current_step} · {duration}"
            self.last_status = status
            self._set_status("stopped", f"Run {name} stopped at step {metrics.current_step}; checkpoint and adapter "
                                        "saved. " + (f"{message} " if message else "")
                                        + "Resume continues it; the Chat tab talks to it.")
        else:
            closing = f"completed · {metrics.current_step} steps · {duration}"
            self.last_status = status
            self._set_status("completed", f"Run {name} completed in {duration}; its adapter loads. "
                                          + (f"{message} " if message else "") + "Open the Chat tab to talk to it.")
        self.closing_text = closing
        for listener in list(self.run_ended):
            listener(run_dir, status, message)

    def notice(self, status: str, message: str) -> tuple[str, str]:
        """The desktop notification of an ending: title and text."""
        name = self.run_dir.name if self.run_dir else "run"
        return (f"Training {status}", f"Run {name}: {status} after {format_duration(self.series.metrics.elapsed())}"
                + (f" — {message}" if status == "failed" and message else ""))

    @property
    def has_adapter(self) -> bool:
        return self.run_dir is not None and (self.run_dir.adapter_dir / "adapter_config.json").is_file()

    @property
    def checkpoints(self) -> list[Path]:
        return self.run_dir.checkpoints() if self.run_dir is not None else []

    def failure_text(self, name: str, message: str) -> str:
        failure = self.last_failure or FailedEvent(message=message)
        if failure.kind == "oom":
            return (f"Run {name} ran out of memory ({failure.message or message}). "
                    f"Settings: {_describe_settings(failure.settings)}.")
        if failure.kind in ("data", "config"):
            return f"Run {name} failed ({failure.kind}): {failure.message or message}"
        return f"Run {name} failed: {failure.message or message}"

    def failure_hint(self) -> str:
        failure = self.last_failure
        hint = failure.hint if failure is not None else ""
        if self.checkpoints and (failure is None or failure.kind not in ("data", "config")):
            hint += f" Resume continues from {self.run_dir.latest_checkpoint().name}."
        return hint.strip()

    # --- an out-of-memory failure: one-click retry ----------------------------------------------------------------
    def retry_offer(self) -> tuple[str | None, str | None]:
        """The texts of the Retry and Resume-with-the-change buttons (None: not offered)."""
        failure = self.last_failure
        if failure is None or failure.kind != "oom" or not failure.suggestion:
            return None, None
        checkpoint = self.run_dir.latest_checkpoint() if self.run_dir is not None else None
        resume = (f"Resume from {checkpoint.name} and {failure.suggestion}"
                  if failure.suggestion_resumable and checkpoint is not None else None)
        return f"Retry: {failure.suggestion}", resume

    def retry_config(self) -> RunConfig | None:
        """The failed run's config with the memory suggestion applied (None unless the run ran out of memory)."""
        from studio.core.train.failures import oom_retry_config

        if self.run_dir is None or self.last_failure is None or self.last_failure.kind != "oom":
            return None
        try:
            config = load_config(self.run_dir.config_path)
        except ConfigError as error:
            self._set_status("failed", f"Cannot retry: {error}")
            return None
        retry = oom_retry_config(config)
        if retry is None:
            return None
        adjusted, _ = retry
        adjusted.name = retry_name(self.run_dir.name)
        return adjusted

    def resume_config(self) -> RunConfig | None:
        """The run that ran out of memory with the memory saving applied, written into its run.toml (the resumed
        run goes on with it); None when it cannot resume with the change."""
        from studio.core.train.failures import oom_retry_config

        if self.run_dir is None or self.last_failure is None or not self.last_failure.suggestion_resumable:
            return None
        try:
            retry = oom_retry_config(load_config(self.run_dir.config_path))
        except ConfigError as error:
            self._set_status("failed", f"Cannot resume: {error}")
            return None
        if retry is None or not retry[1].resumable:
            return None
        adjusted, _ = retry
        save_config(adjusted, self.run_dir.config_path)
        return adjusted

    # --- the Runs view's news -------------------------------------------------------------------------------------
    def follow_rename(self, old: Path, new: Path) -> None:
        if self.run_dir is not None and self.run_dir.path == Path(old):
            self.run_dir = RunDirectory(Path(new))

    def forget(self, folders: Sequence[Path]) -> bool:
        """Runs deleted: True when the one shown was among them (it is shown no more)."""
        if self.run_dir is None or self.run_dir.path not in set(map(Path, folders)):
            return False
        name = self.run_dir.name
        self.run_dir = None
        self.series.reset()
        self._set_status("deleted", f"Run {name} was deleted. Start training for a new run.")
        return True

    # --- results --------------------------------------------------------------------------------------------------
    def save_adapter(self, target: Path) -> Path | None:
        """Copy the run's adapter folder (PEFT standard, with tokenizer, chat template and model card) — the
        Export dialog's adapter export, which never replaces a folder of the user's own files."""
        from studio.core.export.adapter import export_adapter
        from studio.core.export.staging import ExportError

        try:
            written = export_adapter(self.run_dir.path, target)
        except (ExportError, OSError) as error:
            self._set_status("not saved", str(error))
            return None
        self._set_status("saved", f"Run {self.run_dir.name}: adapter saved to {written}")
        return written

    def merge_target(self, folder: Path) -> Path:
        """A new folder beside an earlier merge (NAME-merged-2): the button never replaces one."""
        from studio.core.export.staging import next_free_name

        target = Path(folder) / f"{self.run_dir.name}-merged"
        return next_free_name(target, is_dir=True) if target.exists() else target

    def merge_work(self, target: Path) -> tuple[Callable[[TaskState], Path], tuple[type, ...]]:
        """The merge as a function of a task (run off the GUI thread: progress(fraction, message), cancel), and its
        expected errors."""
        from studio.core.export.merge import merge_adapter
        from studio.core.export.staging import ExportError
        from studio.core.models.source import ModelLoadError

        adapter = self.run_dir.adapter_dir
        return (lambda task: merge_adapter(adapter, target, task=task),
                (ModelLoadError, ExportError, OSError))

    def merge_said(self, word: str, text: str) -> None:
        """A merge's progress or ending in the status (never relabelling the run: a stopped run stays stopped)."""
        self._set_status(word, text)


def default_telemetry() -> Any:
    """The memory readings' source on this machine (NVML, else the host's RAM)."""
    from studio.core.system.gpu import detect_telemetry

    return detect_telemetry()
