"""Run history: curves and summaries read from run directories (no Qt, no training)."""

from __future__ import annotations



from studio.core.runs.store import RunStore
from run_history_shared import _dead_pid, _write, ev, step  # noqa: F401  (shared with the other half)










def test_the_status_is_read_from_the_end_of_a_long_event_file(tmp_path):
    run = RunStore(tmp_path).new_run("long")
    _write(run, [ev("started", 1.0, pid=_dead_pid(), total_steps=5000)]
           + [step(n, 1.0 + n, 1.0) for n in range(1, 3000)]
           + [ev("finished", 5000.0, status="stopped", step=2999)])
    assert run.events_path.stat().st_size > 64 * 1024
    assert run.last_event()["status"] == "stopped"
    assert run.status() == "stopped"
