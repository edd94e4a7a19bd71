"""The run config as a user meets it: TOML files, error messages that name the key, help text."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from studio.core.config.settings import (
    SECTIONS, ConfigError, RunConfig, field_help, load_config, loads, save_config,
)

MINIMAL = """
[model]
name_or_path = "org/some-model"

[data]
train_file = "/data/train.jsonl"
"""


def _with(extra: str) -> str:
    """The minimal valid config plus more tables (TOML forbids repeating [model] or [data])."""
    return MINIMAL + "\n" + extra


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loads(text)
    return str(info.value)


# ------------------------------------------------------------------ round trip


def test_save_then_load_gives_the_same_config(tmp_path):
    model = tmp_path / "base-model"
    model.mkdir()
    config = RunConfig(name="my run")
    config.model.name_or_path = str(model)
    config.model.attn_implementation = "eager"
    config.quantization.mode = "8bit"
    config.lora.r = 8
    config.lora.lora_dropout = 0.1
    config.lora.target_modules = ["q_proj", "v_proj"]
    config.data.train_file = str(tmp_path / "train.jsonl")
    config.data.eval_fraction = 0.2
    config.data.train_on_responses_only = False
    config.training.learning_rate = 1.5e-4
    config.training.max_steps = 123
    config.training.lr_scheduler_type = "linear"

    path = tmp_path / "sub" / "run.toml"
    save_config(config, path)
    loaded = load_config(path)

    assert loaded == config
    assert loaded.digest() == config.digest()
    assert not list(path.parent.glob("*.tmp")), "the atomic write left its temp file behind"


def test_relative_paths_are_read_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "models" / "tiny").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "config.toml").write_text(
        '[model]\nname_or_path = "models/tiny"\n[data]\ntrain_file = "data/train.jsonl"\n'
        'eval_file = "data/eval.jsonl"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder: the working directory must not matter

    config = load_config(folder / "config.toml")

    assert Path(config.model.name_or_path) == (folder / "models" / "tiny").resolve()
    assert Path(config.data.train_file) == (folder / "data" / "train.jsonl").resolve()
    assert Path(config.data.eval_file) == (folder / "data" / "eval.jsonl").resolve()


def test_a_hub_id_is_not_mistaken_for_a_relative_folder(tmp_path):
    (tmp_path / "config.toml").write_text(
        '[model]\nname_or_path = "meta-llama/Llama-3.2-1B-Instruct"\n[data]\ntrain_file = "train.jsonl"\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path / "config.toml")
    assert config.model.name_or_path == "meta-llama/Llama-3.2-1B-Instruct"


def test_ints_are_accepted_for_float_fields():
    config = loads(_with("[training]\nlearning_rate = 1\nnum_train_epochs = 2\n[lora]\nlora_dropout = 0\n"))
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.training.num_train_epochs == 2.0 and isinstance(config.training.num_train_epochs, float)
    assert config.lora.lora_dropout == 0.0


def test_target_modules_may_be_written_as_a_comma_separated_string():
    config = loads(_with('[lora]\ntarget_modules = "q_proj, v_proj"\n'))
    assert config.lora.target_modules == ["q_proj", "v_proj"]


# ------------------------------------------------------------------ errors name the key and the value


def test_unknown_section_is_named():
    message = _error(_with("[trainning]\nlearning_rate = 1e-4\n"))
    assert "trainning" in message
    assert "unknown key" in message


def test_unknown_field_is_named_with_its_section():
    message = _error(_with("[lora]\nrank = 8\n"))
    assert "lora.rank = 8" in message
    assert "unknown key" in message
    assert "lora_alpha" in message  # the known keys are listed so the typo is easy to fix


def test_wrong_type_is_named():
    message = _error(_with('[training]\nlearning_rate = "fast"\n'))
    assert "training.learning_rate = 'fast'" in message
    assert "expected float" in message


def test_a_boolean_is_not_taken_for_a_number():
    message = _error(_with("[lora]\nr = true\n"))
    assert "lora.r = True" in message


@pytest.mark.parametrize(
    ("toml", "key", "shown"),
    [
        ("[lora]\nr = 0\n", "lora.r", "0"),
        ("[lora]\nlora_dropout = 2\n", "lora.lora_dropout", "2"),
        ("[training]\nwarmup_ratio = 0.9\n", "training.warmup_ratio", "0.9"),
    ],
)
def test_out_of_range_values_are_named(toml, key, shown):
    message = _error(_with(toml))
    assert f"{key} = {shown}" in message
    assert "must be at" in message


@pytest.mark.parametrize("value", ["0", "0.0", "-0.1"])
def test_a_learning_rate_of_zero_or_below_is_refused_by_name(value):
    # A learning rate of 0 was accepted and "completed" a run whose adapter never changed.
    message = _error(_with(f"[training]\nlearning_rate = {value}\n"))
    assert f"training.learning_rate = {float(value)!r}: must be above 0.0" in message


@pytest.mark.parametrize("key", ["per_device_train_batch_size"])
def test_an_absurd_batch_size_is_refused_by_name_before_anything_loads(key):
    # 10**9 used to pass validation and fail only after the model had loaded, as a crashed run.
    message = _error(_with(f"[training]\n{key} = {10**9}\n"))
    assert f"training.{key} = {10**9}: must be at most 1024" in message
    assert loads(_with(f"[training]\n{key} = 1024\n"))  # the largest the Config tab offers is fine


def test_all_linear_mixed_with_module_names_is_refused():
    # PEFT reads 'all-linear' as its shortcut only when it stands alone; in a list it names no layer.
    message = _error(_with('[lora]\ntarget_modules = ["all-linear", "q_proj"]\n'))
    assert "lora.target_modules = ['all-linear', 'q_proj']: 'all-linear' must stand alone" in message


def test_a_learning_rate_that_is_not_a_number_is_rejected():
    # TOML allows `nan`; a NaN learning rate turns every adapter weight into NaN, which is only
    # discovered when the adapter is checked at the very end of the run.
    message = _error(_with("[training]\nlearning_rate = nan\n"))
    assert "training.learning_rate" in message


def test_bad_choice_is_named_with_the_choices():
    message = _error(_with('[quantization]\nmode = "3bit"\n'))
    assert "quantization.mode = '3bit'" in message
    assert "4bit" in message and "8bit" in message and "none" in message


def test_invalid_toml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[model]\nname_or_path = "x"\n[training\nlearning_rate = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 3" in message


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(_with("[lora]\nr = 0\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: lora.r = 0")


def test_a_missing_config_file_is_named(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_model_is_named():
    message = _error('[data]\ntrain_file = "train.jsonl"\n')
    assert "model.name_or_path" in message
    assert "no base model" in message


def test_missing_data_is_named():
    message = _error('[model]\nname_or_path = "org/model"\n')
    assert "data.train_file" in message
    assert "no training data" in message


def test_eval_file_and_eval_fraction_together_are_refused():
    text = MINIMAL.replace("[data]\n", '[data]\neval_file = "eval.jsonl"\neval_fraction = 0.1\n')
    assert "data.eval_fraction" in _error(text)


def test_a_config_from_a_newer_studio_is_refused():
    message = _error("schema_version = 99\n" + MINIMAL)
    assert "schema_version = 99" in message


# ------------------------------------------------------------------ help text


def _all_fields() -> list[tuple[str, str]]:
    hints = typing.get_type_hints(RunConfig)
    return [(section, f.name) for section in SECTIONS for f in dataclasses.fields(hints[section])]


def test_every_field_has_help_text():
    fields = _all_fields()
    assert len(fields) > 30
    missing = [f"{section}.{name}" for section, name in fields if not field_help(section, name).strip()]
    assert missing == []


def test_help_for_an_unknown_field_is_a_key_error():
    with pytest.raises(KeyError):
        field_help("lora", "rank")
