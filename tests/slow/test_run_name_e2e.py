"""Run names: the default from the data and the model, `train --name`, and a name in use said, not silently bent."""

from __future__ import annotations

import shutil


def test_train_name_and_a_name_in_use_get_said(run_studio, demo_assets, tmp_path):
    import os

    from studio.core.system.paths import HOME_ENV_VAR

    env = {**os.environ, HOME_ENV_VAR: str(tmp_path / "home")}  # a runs folder of its own, not the session's
    runs = tmp_path / "home" / "runs"
    taken = runs / "walk-named"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_studio("train", demo_assets.config_path, "--name", "walk-named", "--max-steps", "1", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "A run named walk-named already exists: this run is walk-named-2." in result.stdout
    assert (runs / "walk-named-2" / "adapter" / "adapter_config.json").is_file()
    assert (taken / "notes.txt").read_text(encoding="utf-8") == "mine" and len(list(taken.iterdir())) == 1

    calls = tmp_path / "calls-walk.jsonl"
    shutil.copyfile(demo_assets.dataset_path, calls)
    result = run_studio("train", demo_assets.config_path, "--data", calls, "--max-steps", "1", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (runs / "calls-walk-model" / "run.toml").is_file(), "named by its data and model, not 'demo'"
