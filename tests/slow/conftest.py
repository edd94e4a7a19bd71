"""The slow lane: tests that train the demo model, run `finetune-studio train/eval/export/chat/merge` end to end, or
load and run a model for seconds (each took 2 s or more on the loaded 2-core machine).

Every test in this folder is marked `slow` (tests/conftest.py does it by folder), so `pytest -m "not slow"` is the fast
lane a developer runs between edits, and CI runs both. The session's trainings below are fixtures of this folder only:
a test that needs a trained run belongs here.
"""

import shutil
from pathlib import Path

import pytest

@pytest.fixture(scope="session")
def trained_run(demo_assets, tmp_path_factory, run_studio) -> Path:
    """The one full demo training run of the session (the CLI, as a user runs it); returns the run dir."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_studio("train", demo_assets.config_path, "--output", run_dir)
    assert result.returncode == 0, f"demo training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return run_dir


@pytest.fixture(scope="session")
def sensitive_run(demo_assets, tmp_path_factory) -> Path:
    """A QLoRA run (NF4 + double quantisation, the studio's defaults) on the NF4-sensitive demo model
    (demo.make_nf4_sensitive): its adapter answers its training prompts on the 4-bit base it trained on and
    mostly not on the 16-bit weights — the case where chat, merge and export must use the trained weights."""
    from studio.core.config.settings import load_config, save_config
    from studio.core.system.demo import make_nf4_sensitive
    from studio.core.runs.events import EventWriter
    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    root = tmp_path_factory.mktemp("nf4-sensitive")
    model_dir = root / "model"
    shutil.copytree(demo_assets.model_dir, model_dir)
    make_nf4_sensitive(model_dir)
    config = load_config(demo_assets.config_path)
    config.model.name_or_path = str(model_dir)
    config.training.max_steps = 120  # until the adapter answers every training prompt on the 4-bit base
    run = RunDirectory(root / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    writer = EventWriter(run.events_path)
    try:
        assert run_training(config, run, writer.write) == "completed"
    finally:
        writer.close()
    return run.path
