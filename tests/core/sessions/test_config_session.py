"""The Config tab's session, without Qt: the preset chosen and "edited", the last fit, the device, the layer names, the
estimate and the notes, each told to listeners as it changes; and the form table every config knob is in."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from studio.core.config.settings import SECTIONS, RunConfig
from studio.core.sessions.config import (
    CPU_AGAINST, GPU_ESTIMATE_TITLE, RAM_ESTIMATE_TITLE, READING_LAYER_NAMES, ConfigChange, ConfigSession,
)
from studio.core.sessions.config_form import form_fields, form_values
from studio.core.sessions.draft import RunDraft
from studio.core.system.gpu import GpuInfo

MIB = 1024**2
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
}


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def session():
    draft = RunDraft()
    draft.update("model", name_or_path="llama-3.1-8b")  # a bundled shape: the estimate needs no download
    return ConfigSession(draft, gpu=None)


@pytest.fixture
def changes(session):
    seen: list[ConfigChange] = []
    session.subscribe(seen.append)
    return seen


def test_a_draft_edit_reaches_the_sessions_listeners_with_the_fields_named(session, changes):
    session.edit("training", "max_length", 512, source="tab")
    (change,) = changes
    assert change.touches("fields") and change.draft.touches("training", "max_length")
    assert change.draft.source == "tab" and session.draft.config.training.max_length == 512
    session.edit("training", "max_length", 512)
    assert len(changes) == 1, "writing the value a field holds tells nobody"


def test_the_preset_is_the_sessions_and_edited_follows_the_fields(session, changes):
    assert session.preset_key == "cpu-demo", "no GPU: the CPU demo"
    session.choose_preset("8gb")
    assert session.selected_preset().key == "8gb" and any(change.touches("preset") for change in changes)
    assert session.draft.config.training.max_length == 1024 and not session.preset_edited()
    session.edit("training", "max_length", 700)
    assert session.preset_edited()
    session.edit("training", "max_length", 1024)
    assert not session.preset_edited(), "back to the preset's value: not edited any more"
    assert session.show_preset("16gb") and session.preset_key == "16gb"
    assert not session.show_preset("user:gone") and session.preset_key == "16gb"


def test_the_fit_report_holds_only_while_the_fields_are_what_it_describes(session, changes):
    session.set_device(GpuInfo("NVIDIA GeForce RTX 4060", 8188 * MIB, 8188 * MIB))
    session.choose_preset("8gb")
    plan = session.fit()
    assert plan is session.last_fit and plan.fits
    assert session.fit_report.startswith("Fitted to 8.0 GiB free on NVIDIA GeForce RTX 4060")
    assert changes[-1].touches("fit")
    session.edit("lora", "r", session.draft.config.lora.r * 2)
    assert session.fit_report == ""
    session.fit()
    session.choose_preset("12gb")
    assert session.fit_report == ""


def test_the_device_decides_what_the_estimate_is_compared_with(session, changes):
    view = session.estimate()
    assert view.title == RAM_ESTIMATE_TITLE and view.against == CPU_AGAINST, "CPU demo without a GPU: RAM"
    assert "CUDA context" not in view.estimate.breakdown
    session.choose_preset("8gb")
    view = session.estimate()
    assert view.title == GPU_ESTIMATE_TITLE and "8 GB preset's card" in view.against and view.limit == 8 * 1024**3
    session.set_device(GpuInfo("NVIDIA GeForce RTX 4060", 8188 * MIB, 7000 * MIB))
    assert changes[-1].touches("device")
    view = session.estimate()
    assert view.limit == 7000 * MIB and "RTX 4060" in view.against and view.context.startswith("Longest context")
    session.edit("model", "name_or_path", "")
    assert session.estimate().estimate is None and session.estimate().unavailable == ""
    session.edit("model", "name_or_path", "acme/not-downloaded")
    assert session.estimate().unavailable.startswith("No estimate:")
    session.model_downloaded()
    assert changes[-1].touches("shape"), "the tab reads the shape and the layer names again"


def test_what_the_fields_enable_show_and_say_follows_the_draft(session):
    session.edit("training", "max_steps", 0)
    assert session.field_enabled("training", "num_train_epochs")
    session.edit("training", "max_steps", 100)
    assert not session.field_enabled("training", "num_train_epochs")
    session.edit("quantization", "mode", "none")
    assert not session.field_enabled("quantization", "bnb_4bit_quant_type")
    assert not session.field_shown("grpo", "num_generations") and session.field_shown("training", "max_length")
    session.edit("training", "method", "grpo")
    assert session.field_shown("grpo", "num_generations") and not session.field_shown("dpo", "beta")
    assert not session.field_enabled("grpo", "reward_pattern")
    session.edit("grpo", "rewards", ["regex=1"])
    assert session.field_enabled("grpo", "reward_pattern")
    assert "prompts" in session.method_note()
    session.edit("training", "per_device_train_batch_size", 3)
    session.edit("training", "gradient_accumulation_steps", 4)
    assert session.effective_batch().startswith("12 ")


def test_the_layer_names_are_the_sessions_from_request_to_reading(session, changes, tmp_path):
    folder = tmp_path / "tiny-model"
    session.edit("model", "name_or_path", str(folder))
    assert session.layers_request() is None and session.layers_text.startswith("Layer names unknown")
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert session.layers_request() == (str(folder), False)
    assert session.layers_tip == READING_LAYER_NAMES and session.detected is None and session.layers_pending()
    from studio.core.models.layers import LinearModules

    modules = LinearModules(attention=("q_proj", "v_proj"), mlp=("up_proj",), other=())
    session.layers_read(str(folder), False, modules)
    assert session.detected == modules and "up_proj" in session.layers_text and changes[-1].touches("layers")
    assert not session.layers_pending() and session.layers_request() is None, "known: no second read"
    session.set_target_shortcut("attention")
    assert session.draft.config.lora.target_modules == ["q_proj", "v_proj"]


def test_every_knob_is_in_the_form_once_and_form_values_reads_them(session):
    hidden = {("model", "name_or_path"), ("model", "trust_remote_code"), ("model", "init_adapter"),
              ("training", "cpu_threads")}  # the model picker; set by "Continue with…"; the CLI's
    knobs = {(section, field.name) for section in SECTIONS if section != "data"
             for field in dataclasses.fields(typing.get_type_hints(RunConfig)[section])} - hidden
    in_form = [(field.section, field.name) for field in form_fields()]
    assert sorted(in_form) == sorted(knobs) and len(set(in_form)) == len(in_form)
    session.edit("lora", "target_modules", ["q_proj"])
    session.edit("training", "learning_rate", 1e-4)
    values = form_values(session.draft.config)
    assert values["lora"]["target_modules"] == ["q_proj"] and values["training"]["learning_rate"] == 1e-4
    assert "data" not in values and "name_or_path" not in values["model"]
