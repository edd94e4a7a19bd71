"""Run history: curves and summaries read from run directories (no Qt, no training)."""

from __future__ import annotations

import subprocess
import sys


from studio.core.runs.events import EventWriter
from studio.core.runs.store import RunDirectory, RunStore


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


def test_the_status_is_read_from_the_end_of_a_long_event_file(tmp_path):
    run = RunStore(tmp_path).new_run("long")
    _write(run, [ev("started", 1.0, pid=_dead_pid(), total_steps=5000)]
           + [step(n, 1.0 + n, 1.0) for n in range(1, 3000)]
           + [ev("finished", 5000.0, status="stopped", step=2999)])
    assert run.events_path.stat().st_size > 64 * 1024
    assert run.last_event()["status"] == "stopped"
    assert run.status() == "stopped"
