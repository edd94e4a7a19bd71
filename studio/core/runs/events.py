"""The run's event log: `events.jsonl`, append-only, one JSON object per line, flushed per event.

It is the source of truth for the window's curves, the run history and re-attaching after a
restart, so each event is flushed and fsynced as it is written: a kill at any moment leaves every
earlier event readable, at worst with one partial last line, which readers skip.

Event kinds (the `event` key) and their main fields:
- `log`: message, level — progress before training starts ("Loading model…") and warnings.
- `started`: pid, total_steps, config_digest, num_train_rows, resumed_from.
- `step`: step, epoch, loss, learning_rate, grad_norm, tokens_per_second.
- `evaluating`: step, done, total — evaluation batches done so far (at most one event per 2 s).
- `eval`: step, eval_loss.
- `eval_scores`: step, metric, passed, total, score (mean), truncated, seconds — held-out examples generated and
  scored while training (training.score_examples; core.train.scores).
- `checkpoint`: step, path.
- `finished`: status (`completed` | `stopped`), step, final_loss, adapter, adapter_step (the step whose
  adapter was kept: the last, or with early stopping the best evaluation's), best_eval_loss, message.
- `failed`: kind (`oom` | `data` | `config` | `disk` | `crash`), message, hint. `disk` is a full disk: the
  message names the folder, what was being saved and the checkpoint that is intact.
Every event also carries `time` (seconds since the epoch).

Readers get typed events: `parse_event` is the one parser from a JSON object to an `Event` dataclass of its kind
(`StepEvent`, `FailedEvent`, ...; an unknown kind becomes a plain `Event`), used by every reader here (the
supervisor's tail, the run history, the Training session). A field an old file lacks takes its default, a value of
the wrong type reads as missing, and every event is still a read-only mapping of its line (`event["step"]`,
`event.get("hint")`), so keys a newer writer adds are never lost. Writers keep writing plain dicts (`make_event`):
the file format is the one it always was.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

TERMINAL_EVENTS = ("finished", "failed")
FAILURE_KINDS = ("oom", "data", "config", "disk", "crash")

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, eq=False)
class Event(Mapping[str, Any]):
    """One line of events.jsonl, typed; also a read-only mapping of the line itself (every key, known or not)."""

    KIND: ClassVar[str] = ""
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    time: float | None = None
    pid: int | None = None  # on the first event of each training process

    @property
    def name(self) -> str:
        """The event's kind, as written (`step`, `failed`, ...)."""
        return str(self.raw.get("event", self.KIND))

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


@dataclass(frozen=True, eq=False)
class LogEvent(Event):
    KIND: ClassVar[str] = "log"
    message: str = ""
    level: str = "info"
    phase: str | None = None  # before the first step: data, libraries, tokenizer, tokenising, model
    resumed_from: str | None = None


@dataclass(frozen=True, eq=False)
class StartedEvent(Event):
    KIND: ClassVar[str] = "started"
    total_steps: int | None = None
    start_step: int = 0
    resumed_from: str | None = None
    num_train_rows: int | None = None
    config_digest: str | None = None
    device: str | None = None


@dataclass(frozen=True, eq=False)
class StepEvent(Event):
    KIND: ClassVar[str] = "step"
    step: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    metrics: dict = field(default_factory=dict)  # a method's own (TRL's log keys: rewards/margins, kl, ...)


@dataclass(frozen=True, eq=False)
class EvaluatingEvent(Event):
    KIND: ClassVar[str] = "evaluating"
    step: int | None = None
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True, eq=False)
class EvalEvent(Event):
    KIND: ClassVar[str] = "eval"
    step: int | None = None
    eval_loss: float | None = None


@dataclass(frozen=True, eq=False)
class EvalScoresEvent(Event):
    KIND: ClassVar[str] = "eval_scores"
    step: int | None = None
    metric: str = ""
    passed: int | None = None
    total: int | None = None
    score: float | None = None
    truncated: int | None = None
    seconds: float | None = None


@dataclass(frozen=True, eq=False)
class CheckpointEvent(Event):
    KIND: ClassVar[str] = "checkpoint"
    step: int | None = None
    path: str | None = None


@dataclass(frozen=True, eq=False)
class FinishedEvent(Event):
    KIND: ClassVar[str] = "finished"
    status: str = "completed"
    step: int | None = None
    final_loss: float | None = None
    adapter: str | None = None
    adapter_step: int | None = None
    best_eval_loss: float | None = None
    message: str = ""


@dataclass(frozen=True, eq=False)
class FailedEvent(Event):
    KIND: ClassVar[str] = "failed"
    kind: str = "crash"  # one of FAILURE_KINDS
    message: str = ""
    hint: str = ""
    key: str | None = None  # a config failure's key
    issues: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # an out-of-memory failure's memory settings
    suggestion: str | None = None  # ... and the change a retry would make
    suggestion_resumable: bool = False
    folder: str | None = None
    intact_checkpoint: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {cls.KIND: cls for cls in (
    LogEvent, StartedEvent, StepEvent, EvaluatingEvent, EvalEvent, EvalScoresEvent, CheckpointEvent, FinishedEvent,
    FailedEvent)}


def _read_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _read_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_READERS: dict[str, Callable[[Any], Any]] = {
    "int | None": _read_int, "int": _read_int, "float | None": _read_float, "str": _read_str, "str | None": _read_str,
    "bool": lambda v: v if isinstance(v, bool) else None, "dict": lambda v: v if isinstance(v, dict) else None,
    "list": lambda v: v if isinstance(v, list) else None,
}


def parse_event(raw: Mapping[str, Any]) -> Event:
    """The typed event of one events.jsonl object (an Event is returned as it is): the one parser of events."""
    if isinstance(raw, Event):
        return raw
    cls = EVENT_TYPES.get(raw.get("event"), Event)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name == "raw" or f.name not in raw:
            continue
        value = _READERS[str(f.type)](raw[f.name])
        if value is not None:  # a value of the wrong type reads as missing: the field's default
            values[f.name] = value
    return cls(raw=raw, **values)


def make_event(kind: str, /, **fields: Any) -> dict[str, Any]:
    """An event dict with its kind and timestamp first (readable when the file is opened by hand)."""
    return {"event": kind, "time": round(time.time(), 3), **fields}


class EventWriter:
    """Appends events to an events.jsonl file; safe to call from the training callback."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Binary append: one write() per event keeps lines whole even if two processes append.
        self._file = open(self.path, "ab")
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            # A writer killed mid-line left a torn last line; start ours on a fresh one so it stays valid.
            self._file.write(b"\n")

    def __call__(self, event: dict[str, Any]) -> None:
        self.write(event)

    def write(self, event: dict[str, Any]) -> None:
        """Append one event and push it to disk before returning."""
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Append a single event (used by the supervisor to record how a child process ended)."""
    with EventWriter(path) as writer:
        writer.write(event)


class EventReader:
    """Reads new complete events from a growing events.jsonl (tail -f semantics)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def read_new(self) -> list[Event]:
        """Events appended since the last call; a partial last line is left for the next call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return _parse_lines(chunk[: end + 1])


def read_events(path: Path) -> list[Event]:
    """Every complete event in the file (an absent file has none)."""
    return EventReader(path).read_new()


_TAIL_BYTES = 64 * 1024


def read_last_event(path: Path) -> Event | None:
    """The last complete event, read from the end of the file (cheap however long the file is)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return None
    # From the last line back: the first complete event is the answer (a run's tail holds hundreds of steps).
    for line in reversed(tail[: tail.rfind(b"\n") + 1].splitlines()):
        if events := _parse_lines(line):
            return events[-1]
    if size > _TAIL_BYTES:  # one event longer than the tail: rare, read it all
        events = read_events(path)
        return events[-1] if events else None
    return None


def _parse_lines(data: bytes) -> list[Event]:
    events = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line torn by a kill mid-write; everything before it is intact
        if isinstance(event, dict) and "event" in event:
            events.append(parse_event(event))
    return events
