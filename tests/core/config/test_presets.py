"""Presets, the new config fields (TOML, docs, library configs) and user presets."""

from __future__ import annotations

import json

import pytest

from studio.core.config.settings import ConfigError, RunConfig, load_config, loads, save_config
from studio.core.system.gpu import GpuInfo
from studio.core.models.source import find_model_config
from studio.core.config.presets import (
    CPU_DEMO, GIB, GPU_PRESETS, KNOB_SECTIONS, builtin_presets, cpu_demo_config, load_user_preset, load_user_presets, preset_for_gpu, save_user_preset, user_presets_dir,
)
from studio.core.plan.vram import FITS, ModelShape, estimate_vram

MIB = 1024**2


@pytest.mark.parametrize("preset", builtin_presets(), ids=lambda p: p.key)
def test_every_preset_builds_a_valid_config_that_keeps_model_and_data(preset):
    config = preset.build("org/model", "/data/train.jsonl")
    config.validate()
    assert config.model.name_or_path == "org/model"
    assert config.data.train_file == "/data/train.jsonl"
    assert loads(_dumps(config)) == config, "a preset's config survives TOML"


def _dumps(config: RunConfig) -> str:
    from studio.core.config.settings import dumps

    return dumps(config)


def test_the_cpu_demo_preset_is_the_demo_config_whatever_its_values():
    demo = cpu_demo_config("model", "data.jsonl")
    built = CPU_DEMO.build("model", "data.jsonl")
    for section in KNOB_SECTIONS:
        assert getattr(built, section) == getattr(demo, section)


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.key)
def test_each_gpu_preset_fits_its_card_with_the_model_it_was_sized_for(preset):
    source = find_model_config(preset.suggested_model)
    assert source.origin == "bundled", "the suggested model has a shipped shape"
    config = preset.build(preset.suggested_model, "train.jsonl")
    estimate = estimate_vram(ModelShape.from_config(source.config, source.name), config)
    # A card reports a bit less than its nominal size, and the desktop takes some of it.
    assert estimate.verdict(preset.vram_bytes - 600 * MIB) == FITS, estimate.format_table()
    assert config.quantization.mode == "4bit" and config.training.gradient_checkpointing


def test_bigger_cards_get_longer_or_larger_batches():
    budgets = [p.build("m", "d").training.max_length * p.build("m", "d").training.per_device_train_batch_size
               for p in GPU_PRESETS]
    assert budgets == sorted(budgets) and budgets[0] < budgets[-1]


@pytest.mark.parametrize(("total_mib", "key"), [
    (None, "cpu-demo"), (6144, "8gb"), (8188, "8gb"), (12288, "12gb"), (16380, "16gb"), (24564, "24gb"),
    (81559, "24gb"),
])
def test_the_preset_for_the_detected_gpu(total_mib, key):
    gpu = None if total_mib is None else GpuInfo("card", total_mib * MIB, total_mib * MIB // 2)
    assert preset_for_gpu(gpu).key == key


def test_a_preset_sets_the_knobs_and_nothing_else():
    config = RunConfig(name="mine")
    config.model.name_or_path = "org/model"
    config.model.trust_remote_code = True
    config.data.train_file = "/d.jsonl"
    config.data.eval_fraction = 0.1
    applied = GPU_PRESETS[1].apply(config)
    assert applied.model == config.model and applied.data == config.data and applied.name == "mine"
    assert applied.training.max_length == 2048
    assert config.training.max_length == 1024, "the original is left alone"


# ------------------------------------------------------------------ user presets


def test_user_preset_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path))
    config = GPU_PRESETS[2].build("org/model", "/d.jsonl")
    config.lora.r = 48
    config.lora.use_rslora = True
    config.training.packing = True
    path = save_user_preset("My 4060 Ti / long", config)
    assert path.parent == user_presets_dir() == tmp_path / "presets"
    assert path.name == "my-4060-ti-long.toml"

    presets, problems = load_user_presets()
    assert problems == []
    (preset,) = presets
    assert preset.label == "My 4060 Ti / long" and not preset.builtin
    other = RunConfig()
    other.model.name_or_path = "another/model"
    applied = preset.apply(other)
    assert applied.model.name_or_path == "another/model"
    for section in KNOB_SECTIONS:
        assert getattr(applied, section) == getattr(config, section)


def test_a_broken_user_preset_is_reported_with_its_file_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path))
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "bad.toml").write_text('[preset]\nlabel = "bad"\n[lora]\nr = 0\n', encoding="utf-8")
    (folder / "alien.toml").write_text('[model]\nname_or_path = "x"\n', encoding="utf-8")
    (folder / "good.toml").write_text('[lora]\nr = 4\n', encoding="utf-8")
    presets, problems = load_user_presets()
    assert [p.label for p in presets] == ["good"]
    assert any("bad.toml" in p and "lora.r = 0" in p for p in problems)
    assert any("alien.toml" in p and "model" in p for p in problems)
    with pytest.raises(ConfigError):
        load_user_preset(folder / "missing.toml")


# ------------------------------------------------------------------ the new config fields


def test_new_fields_survive_a_toml_round_trip(tmp_path):
    config = RunConfig(name="all knobs")
    config.model.name_or_path = "org/model"
    config.data.train_file = str(tmp_path / "train.jsonl")
    config.lora.modules_to_save = ["lm_head", "embed_tokens"]
    config.lora.use_rslora = True
    config.lora.use_dora = True
    config.training.packing = True
    config.training.eval_strategy = "epoch"
    config.training.early_stopping_patience = 3
    config.data.eval_fraction = 0.1
    path = tmp_path / "run.toml"
    save_config(config, path)
    assert load_config(path) == config


def test_new_fields_are_validated_by_name():
    base = '[model]\nname_or_path = "m"\n[data]\ntrain_file = "d.jsonl"\n'
    with pytest.raises(ConfigError, match="training.eval_strategy = 'sometimes'"):
        loads(base + '[training]\neval_strategy = "sometimes"\n')
    with pytest.raises(ConfigError, match="training.early_stopping_patience = 2"):
        loads(base + '[training]\neval_strategy = "no"\nearly_stopping_patience = 2\n')
    with pytest.raises(ConfigError, match="training.early_stopping_patience = 2: early stopping needs eval data"):
        loads(base + '[training]\neval_strategy = "steps"\nearly_stopping_patience = 2\n')
    loads(base + 'eval_fraction = 0.2\n[training]\neval_strategy = "steps"\nearly_stopping_patience = 2\n')
    with pytest.raises(ConfigError, match="lora.use_dora"):
        loads(base + '[lora]\nuse_dora = "yes"\n')


def test_docs_config_md_is_up_to_date():
    from studio.core.config.docs import DOCS_PATH, render

    assert DOCS_PATH.read_text(encoding="utf-8") == render(), "run: python -m studio.core.config.docs"
    for name in ("use_rslora", "use_dora", "modules_to_save", "packing", "early_stopping_patience"):
        assert f"`{name}`" in render()


def test_packing_eval_and_early_stopping_reach_the_trainer(tmp_path):
    from transformers import EarlyStoppingCallback

    from studio.core.train.callback import SaveEachNewBestCallback
    from studio.core.train.factories import Hardware, extra_callbacks, sft_config

    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    config = RunConfig()
    config.training.packing = True
    config.training.eval_strategy = "epoch"
    config.training.early_stopping_patience = 2
    args = sft_config(config, hardware, tmp_path, has_eval=True)
    assert args.packing is True
    assert args.eval_strategy == "epoch"
    assert args.metric_for_best_model == "eval_loss" and args.greater_is_better is False
    callback, save_best = extra_callbacks(config, has_eval=True)
    assert isinstance(callback, EarlyStoppingCallback) and callback.early_stopping_patience == 2
    assert isinstance(save_best, SaveEachNewBestCallback), "a checkpoint at each new best eval loss"

    assert extra_callbacks(config, has_eval=False) == [], "no eval data: no early stopping"
    args = sft_config(config, hardware, tmp_path, has_eval=False)
    assert args.eval_strategy == "no" and args.metric_for_best_model is None
    config.training.early_stopping_patience = 0
    assert extra_callbacks(config, has_eval=True) == []


def test_max_steps_zero_means_the_epochs_like_minus_one(tmp_path):
    """transformers would train exactly one step for max_steps = 0; in the studio 0 and -1 both mean "use the
    epochs", and with no steps and no epochs there is nothing to train."""
    from studio.core.train.factories import Hardware, sft_config

    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    config = RunConfig()
    config.model.name_or_path, config.data.train_file = "m", "d.jsonl"
    config.training.max_steps, config.training.num_train_epochs = 0, 2.0
    config.validate()
    args = sft_config(config, hardware, tmp_path, has_eval=False)
    assert args.max_steps == -1 and args.num_train_epochs == 2.0
    config.training.num_train_epochs = 0.0
    with pytest.raises(ConfigError, match="training.num_train_epochs = 0.0: nothing to train"):
        config.validate()


def test_user_presets_live_under_the_user_data_folder(studio_home):
    assert user_presets_dir() == studio_home / "presets"


def test_bundled_shapes_are_plain_config_json(tmp_path):
    # The shapes are real config.json files: transformers can build the architecture from them.
    for preset in GPU_PRESETS:
        data = find_model_config(preset.suggested_model).config
        assert data["model_type"] and data["architectures"] and json.dumps(data)
    assert GPU_PRESETS[0].vram_bytes == 8 * GIB
