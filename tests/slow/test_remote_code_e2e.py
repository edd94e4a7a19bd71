"""A model's own Python code never runs without the user's opt-in, and nothing ever asks on stdin.

transformers asks "Do you wish to run the custom code? [y/N]" when trust_remote_code is not given: a
piped "y" then ran a model folder's code. Every command must refuse such a model by name instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from remote_code_shared import MARKER_CODE, remote_code_model  # noqa: F401  (shared with the other half)





@pytest.fixture()
def adapter_on_it(tmp_path, remote_code_model) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(remote_code_model),
                                                            "peft_type": "LORA", "r": 4}))
    return folder


def _refused(result, remote_code_model: Path) -> None:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert "trust_remote_code" in result.stderr and "Traceback" not in result.stderr
    assert not (remote_code_model / "CODE-RAN").exists(), "the model's code ran"


def test_chat_refuses_a_model_that_needs_its_own_code_even_with_a_y_on_stdin(remote_code_model, run_studio):
    result = run_studio("chat", "--model", remote_code_model, "--prompt", "hi", input="y\ny\n")
    _refused(result, remote_code_model)


def test_merge_and_gguf_export_refuse_it_too(remote_code_model, adapter_on_it, tmp_path, run_studio):
    _refused(run_studio("merge", adapter_on_it, "--output", tmp_path / "merged", input="y\n"), remote_code_model)
    _refused(run_studio("export", "gguf", adapter_on_it, "--output", tmp_path / "out" / "m.gguf", input="y\n"),
             remote_code_model)
    assert not (tmp_path / "merged").exists() and not list((tmp_path / "out").glob(".merge-*"))


def test_data_inspect_with_its_tokenizer_refuses_it(remote_code_model, demo_assets, run_studio):
    result = run_studio("data", "inspect", demo_assets.dataset_path, "--model", remote_code_model, input="y\n")
    _refused(result, remote_code_model)


def test_training_refuses_it_before_a_run_folder_exists(remote_code_model, demo_assets, tmp_path, run_studio):
    from studio.core.config.settings import load_config, save_config

    config = load_config(demo_assets.config_path)
    config.model.name_or_path = str(remote_code_model)
    save_config(config, tmp_path / "run.toml")
    result = run_studio("train", tmp_path / "run.toml", "--output", tmp_path / "run", input="y\n")

    _refused(result, remote_code_model)
    assert "model.trust_remote_code" in result.stderr
    assert not (tmp_path / "run").exists()
