"""Run names: the default from the data and the model, `train --name`, and a name in use said, not silently bent."""

from __future__ import annotations

import shutil

import pytest

from studio.core.config.settings import RunConfig
from studio.core.runs.store import default_run_name
from studio.core.sessions.draft import RunDraft
from studio.core.sessions.run_name import RunNaming


def test_the_default_name_is_the_datas_and_the_models():
    assert default_run_name("/data/calls-tr.jsonl", "/models/Qwen2.5-0.5B-Instruct") == "calls-tr-Qwen2.5-0.5B-Instruct"
    assert default_run_name("org/support-chats", "meta-llama/Llama-3.2-1B") == "support-chats-Llama-3.2-1B"
    assert default_run_name("", "") == "run"


def test_a_configs_name_gives_way_when_its_data_changes_and_a_typed_one_stays():
    config = RunConfig(name="demo")
    config.data.train_file, config.model.name_or_path = "/d/dataset.jsonl", "/m/model"
    draft = RunDraft(config)
    naming = RunNaming(draft)
    draft.update("training", max_length=128)
    assert naming.name == "demo", "an edit of another field keeps it"
    draft.update("data", train_file="/d/calls-tr.jsonl")
    assert naming.name == "" and naming.for_start() == "calls-tr-model"
    naming.type("my-run")
    draft.update("model", name_or_path="/m/other")
    assert naming.name == "my-run"


@pytest.mark.slow
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
