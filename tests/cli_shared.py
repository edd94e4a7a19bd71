"""What tests/core/test_cli.py and tests/slow/test_cli_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import json
from studio.core.config.settings import load_config


def _fake_stopped_run(demo_assets, folder):
    """A run folder as a stopped run leaves it: run.toml, events, checkpoint-2 and checkpoint-4 (no weights)."""
    from studio.core.config.settings import save_config
    from studio.core.runs.events import EventWriter, make_event
    from studio.core.runs.store import RunDirectory

    run = RunDirectory(folder)
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 8
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        writer.write(make_event("log", level="info", message="Training process 1 started", pid=1))
        writer.write(make_event("finished", status="stopped", step=4))
    for step in (2, 4):
        checkpoint = run.checkpoints_dir / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 8}))
    return run
