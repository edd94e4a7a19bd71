"""Presets, the new config fields (TOML, docs, library configs) and user presets."""

from __future__ import annotations


from studio.core.config.settings import RunConfig


# ------------------------------------------------------------------ wired into PEFT / TRL / transformers


def test_lora_options_reach_peft():
    from studio.core.train.factories import lora_config

    config = RunConfig()
    lora = lora_config(config)
    assert lora.use_rslora is False and lora.use_dora is False and not lora.modules_to_save
    config.lora.use_rslora = True
    config.lora.use_dora = True
    config.lora.modules_to_save = ["lm_head"]
    config.lora.target_modules = ["q_proj", "v_proj"]
    lora = lora_config(config)
    assert lora.use_rslora and lora.use_dora and list(lora.modules_to_save) == ["lm_head"]
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
