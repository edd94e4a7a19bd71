"""What tests/core/runs/test_run_history.py and tests/slow/test_run_history_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import subprocess
import sys
from studio.core.runs.events import EventWriter
from studio.core.runs.store import RunDirectory


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def ev(kind: str, t: float, /, **fields) -> dict:
    return {"event": kind, "time": t, **fields}


def step(n: int, t: float, loss: float, **fields) -> dict:
    return ev("step", t, step=n, epoch=n / 10, loss=loss, learning_rate=1e-3, grad_norm=0.5,
              tokens_per_second=100.0, **fields)


def _write(run: RunDirectory, events: list[dict]) -> None:
    with EventWriter(run.events_path) as writer:
        for event in events:
            writer.write(event)
