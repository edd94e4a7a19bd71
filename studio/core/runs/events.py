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
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

TERMINAL_EVENTS = ("finished", "failed")
FAILURE_KINDS = ("oom", "data", "config", "disk", "crash")

Emit = Callable[[dict[str, Any]], None]


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

    def read_new(self) -> list[dict[str, Any]]:
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


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event in the file (an absent file has none)."""
    return EventReader(path).read_new()


_TAIL_BYTES = 64 * 1024


def read_last_event(path: Path) -> dict[str, Any] | None:
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


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    events = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line torn by a kill mid-write; everything before it is intact
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events
