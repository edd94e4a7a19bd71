"""The tabs' Qt-free state: one draft both tabs edit, the Dataset tab's session and tasks, the form's metadata."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from studio.core.config.presets import CPU_DEMO, GPU_PRESETS, builtin_presets
from studio.core.config.settings import SECTIONS, ConfigError, RunConfig, field_bounds
from studio.core.data.issues import DataError
from studio.core.data.loading import ScanCancelled
from studio.core.plan.speedups import Capabilities, plan_fast_path
from studio.core.sessions import dataset as dataset_session
from studio.core.sessions.config import comparison_preset, fast_path_line
from studio.core.sessions.dataset import DatasetSession, ReadRequest, read_source
from studio.core.sessions.draft import Change, RunDraft


class FakeState:
    """What a TaskRunner gives a task function, recorded."""

    def __init__(self, *, cancel_after: int | None = None):
        self.progressed: list[tuple] = []
        self.partials: list = []
        self._polls = 0
        self._cancel_after = cancel_after

    def progress(self, *values):
        self.progressed.append(values)

    def partial(self, value):
        self.partials.append(value)

    def cancelled(self) -> bool:
        self._polls += 1
        return self._cancel_after is not None and self._polls > self._cancel_after


@pytest.fixture
def draft():
    return RunDraft()


@pytest.fixture
def changes(draft):
    seen: list[Change] = []
    draft.subscribe(seen.append)
    return seen


# --------------------------------------------------------------------------------------------- one source of truth


def test_an_edit_through_the_dataset_session_is_what_the_config_side_reads(draft, changes):
    session = DatasetSession(draft)
    session.edit(source="dataset tab", eval_fraction=0.2, skip_bad_rows=True)
    assert (draft.config.data.eval_fraction, draft.config.data.skip_bad_rows) == (0.2, True)
    assert changes == [Change("data", frozenset({"eval_fraction", "skip_bad_rows"}), "dataset tab")]
    assert changes[0].touches("data", "eval_fraction") and not changes[0].touches("training")

    session.edit(source="dataset tab", eval_fraction=0.2)  # the value it already holds
    assert len(changes) == 1, "writing an unchanged value notifies nobody"


def test_an_edit_on_the_config_side_is_what_the_dataset_session_reads(draft, changes):
    session = DatasetSession(draft)
    draft.update("training", source="config tab", max_length=512, seed=7)
    draft.update("model", source="config tab", name_or_path=" org/model ", trust_remote_code=True)
    assert (session.max_length, session.seed, session.model_name, session.trust_remote_code) == \
        (512, 7, "org/model", True)
    assert [change.section for change in changes] == ["training", "model"]


def test_set_config_holds_a_copy_and_tells_every_view_everything_changed(draft, changes):
    config = RunConfig()
    config.data.column_mapping = ["prompt=question"]
    draft.set_config(config)
    config.data.column_mapping.append("completion=answer")  # the caller's object is not the draft's
    assert draft.config.data.column_mapping == ["prompt=question"]
    assert len(changes) == 1 and changes[0].section is None
    assert all(changes[0].touches(section) for section in SECTIONS)
    assert draft.snapshot() == draft.config and draft.snapshot() is not draft.config


def test_a_list_written_into_the_draft_is_not_shared_with_the_writer(draft):
    modules = ["q_proj"]
    draft.update("lora", target_modules=modules)
    modules.append("v_proj")
    assert draft.config.lora.target_modules == ["q_proj"]


def test_a_listener_that_writes_back_what_it_was_shown_cannot_loop(draft):
    calls = []

    def echo(change: Change) -> None:  # a view that re-renders and writes its widgets back
        calls.append(change)
        draft.update("lora", source="echo", r=draft.config.lora.r)

    draft.subscribe(echo)
    draft.update("lora", source="form", r=32)
    assert len(calls) == 1 and draft.config.lora.r == 32


def test_a_change_made_by_a_listener_reaches_everyone_after_the_current_one(draft):
    order = []

    def first(change: Change) -> None:
        order.append(("first", change.section))
        if change.section == "training":
            draft.update("data", eval_fraction=0.1)  # e.g. a rule that follows the schedule

    draft.subscribe(first)
    draft.subscribe(lambda change: order.append(("second", change.section)))
    draft.update("training", eval_strategy="epoch")
    assert order == [("first", "training"), ("second", "training"), ("first", "data"), ("second", "data")]


def test_an_unsubscribed_listener_hears_nothing_more(draft):
    seen = []
    unsubscribe = draft.subscribe(seen.append)
    draft.update("lora", r=8)
    unsubscribe()
    draft.update("lora", r=4)
    assert len(seen) == 1


def test_update_names_an_unknown_section_or_field(draft):
    with pytest.raises(KeyError, match="lora.rank"):
        draft.update("lora", rank=8)
    with pytest.raises(KeyError, match="adapter"):
        draft.update("adapter", r=8)


# --------------------------------------------------------------------------------------------- the Dataset session


def test_opening_another_source_starts_over_with_how_it_is_read(draft, changes):
    session = DatasetSession(draft)
    session.edit(train_file="a.csv", encoding="cp1254", format="prompt_completion",
                 column_mapping=["prompt=q"], skip_bad_rows=True, split="test", text_split="file")
    changes.clear()
    assert session.open("a.csv") is False and changes == []
    assert session.open("b.jsonl", source="tab") is True
    data = draft.config.data
    assert (data.train_file, data.encoding, data.format, data.column_mapping, data.skip_bad_rows, data.split,
            data.text_split) == ("b.jsonl", "utf-8", "auto", [], False, "train", "blank_lines")
    assert len(changes) == 1 and changes[0].source == "tab"


def test_a_column_mapping_is_written_as_the_config_writes_it(draft):
    session = DatasetSession(draft)
    session.apply_mapping("prompt_completion", {"prompt": "question", "completion": "answer"})
    assert draft.config.data.format == "prompt_completion"
    assert draft.config.data.column_mapping == ["prompt=question", "completion=answer"]
    assert session.mapping() == {"prompt": "question", "completion": "answer"}
    session.edit(column_mapping=["no equals sign"])
    assert session.mapping() == {}, "a mapping that cannot be parsed maps nothing"


def test_the_source_is_read_again_only_when_what_is_read_changed(draft):
    session = DatasetSession(draft)
    assert not session.needs_read(reading=False), "no source chosen"
    session.edit(train_file="chat.jsonl")
    assert session.needs_read(reading=False)
    assert session.begin_read() == ReadRequest("chat.jsonl", "auto", (), "utf-8", "train", "blank_lines")
    assert not session.needs_read(reading=True), "being read"
    session.edit(eval_fraction=0.2, train_on_responses_only=False, skip_bad_rows=True)
    assert not session.needs_read(reading=True), "the eval split and the loss mask do not change what is read"
    session.read_failed(DataError("chat.jsonl: no such file"))
    assert not session.needs_read(reading=False), "a failed read is not retried by every edit elsewhere"
    session.edit(encoding="cp1254")
    assert session.needs_read(reading=False)


def test_a_new_model_forgets_the_tokenizer_and_a_late_one_is_not_kept(draft):
    session = DatasetSession(draft)
    draft.update("model", name_or_path="org/a")
    assert session.follow_model() and not session.follow_model()
    assert session.wants_tokenizer()
    draft.update("model", name_or_path="org/b")
    assert not session.tokenizer_loaded("org/a", object()), "org/a's tokenizer arrived after the switch"
    assert session.follow_model() and session.tokenizer is None
    assert session.tokenizer_failed("org/b", OSError("org/b is not a local folder\nand more"))
    assert session.tokenizer_error == "org/b is not a local folder" and not session.wants_tokenizer()


def test_the_preview_says_what_it_waits_for(draft, tmp_path):
    session = DatasetSession(draft)
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello"}]}) + "\n", encoding="utf-8")
    session.edit(train_file=str(path))
    session.data = read_source(session.begin_read(), FakeState())
    assert session.preview_row(1) is None, "no such row"
    assert session.preview_row(0).message.startswith("Choose a model on the Config tab")
    assert session.preview_row(0).where == "Line 1 · 2 turn(s)"
    draft.update("model", name_or_path="org/model")
    session.follow_model()
    waiting = session.preview_row(0)
    assert waiting.waiting_for_tokenizer and waiting.message == "Loading the tokenizer of org/model…"
    assert session.stats_request() is None, "nothing to measure with before the tokenizer is loaded"
    session.tokenizer_failed("org/model", ValueError("gated"))
    assert session.preview_row(0).message == "The tokenizer of org/model could not be loaded: gated"


def test_reading_reports_the_first_rows_and_throttled_progress(draft, tmp_path, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(3)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    real_load = dataset_session.load_data

    def chatty_load(*args, progress, **kwargs):
        for step in range(100):  # a hundred reports within a few microseconds
            progress(step / 100, step)
        progress(1.0, 3)
        return real_load(*args, progress=progress, **kwargs)

    monkeypatch.setattr(dataset_session, "load_data", chatty_load)
    state = FakeState()
    data = read_source(ReadRequest.of(dataclasses.replace(draft.config.data, train_file=str(path))), state)
    assert len(data.examples) == 3 and data.complete
    assert state.partials and len(state.partials[0].examples) <= 3, "the first rows came before the whole file"
    assert state.progressed[0] == (0.0, 0) and (1.0, 3) in state.progressed
    assert len(state.progressed) < 10, f"throttled, not one report per call: {len(state.progressed)}"


def test_anything_a_read_raises_is_a_data_error_naming_the_source_and_cancelling_stays_cancelling(monkeypatch):
    request = ReadRequest("broken.parquet", "auto", (), "utf-8", "train", "blank_lines")

    def broken(*args, **kwargs):
        raise KeyError("num_rows")

    monkeypatch.setattr(dataset_session, "load_data", broken)
    with pytest.raises(DataError, match=r"broken.parquet: cannot be read \(KeyError: 'num_rows'\)"):
        read_source(request, FakeState())

    def cancelled(*args, **kwargs):
        raise ScanCancelled()

    monkeypatch.setattr(dataset_session, "load_data", cancelled)
    with pytest.raises(ScanCancelled):
        read_source(request, FakeState())


# --------------------------------------------------------------------------------------------- the form's metadata


def _number_fields() -> list[tuple[str, str]]:
    fields = []
    for section in SECTIONS:
        settings_type = typing.get_type_hints(RunConfig)[section]
        hints = typing.get_type_hints(settings_type)
        fields += [(section, f.name) for f in dataclasses.fields(settings_type) if hints[f.name] in (int, float)]
    return fields


def test_every_number_of_a_config_has_the_range_the_form_offers_in_its_metadata():
    fields = _number_fields()
    assert ("lora", "r") in fields and ("training", "learning_rate") in fields and len(fields) >= 20
    for section, name in fields:
        low, high = field_bounds(section, name)
        default = getattr(getattr(RunConfig(), section), name)
        assert low <= default <= high, f"{section}.{name}: the default {default} is outside {low}…{high}"
    assert field_bounds("training", "learning_rate") == (0.0, 1.0), "`above` is the box's lowest value"


def test_a_value_the_form_cannot_show_is_refused_by_name():
    config = RunConfig()
    config.model.name_or_path, config.data.train_file = "org/model", "train.jsonl"
    config.lora.r = 2048
    with pytest.raises(ConfigError, match=r"lora.r = 2048: must be at most 1024"):
        config.validate()


# --------------------------------------------------------------------------------------------- speed-ups and presets


def _plan(*, device="cpu", liger=False, flash=False, batch=2, fast=True):
    config = RunConfig()
    config.training.per_device_train_batch_size = batch
    config.training.fast_path = fast
    capabilities = Capabilities(device, (8, 9) if device == "cuda" else None, liger, flash)
    return plan_fast_path(config, capabilities, compute_dtype="bfloat16" if device == "cuda" else "float32")


def test_the_speed_up_plan_lists_each_speed_up_with_whether_it_is_on():
    plan = _plan(device="cuda", liger=True, flash=True)
    assert [(s.name, s.enabled) for s in plan.speedups] == [
        ("Liger Kernel", True), ("FlashAttention-2", True), ("padding-free batches", True)]
    assert plan.notes == ("Liger Kernel: on (RMSNorm, RoPE, SwiGLU)", "attention: flash_attention_2 (instead of sdpa)",
                          "padding-free batches: on"), "the training log's lines are as before"
    assert fast_path_line(plan) == "on here: Liger Kernel, FlashAttention-2, padding-free batches"

    missing = _plan(device="cuda", batch=1)
    assert [s.name for s in missing.missing_packages] == ["Liger Kernel"]
    assert missing.missing_packages[0].install_hint == 'pip install "finetune-studio[gpu]"'
    assert fast_path_line(missing) == "Liger Kernel not installed (hover for how)"

    cpu = _plan()
    assert not cpu.applied and "NVIDIA GPU" in cpu.summary()
    assert fast_path_line(cpu) == "nothing to gain here (hover for why)"
    assert fast_path_line(_plan(device="cuda", liger=True, fast=False)) == "off: plain transformers + PEFT + TRL"


def test_a_gpu_preset_names_its_card_and_the_estimate_falls_back_to_the_smallest():
    for preset in GPU_PRESETS:
        assert preset.card and preset.label.startswith(f"{preset.card} — "), preset.label
    assert [p.card for p in GPU_PRESETS] == ["8 GB", "12 GB", "16 GB", "24 GB+"]
    assert comparison_preset(None) is GPU_PRESETS[0] and comparison_preset(CPU_DEMO) is GPU_PRESETS[0]
    sixteen = next(p for p in builtin_presets() if p.key == "16gb")
    assert comparison_preset(sixteen) is sixteen and sixteen.card == "16 GB"


# --------------------------------------------------------------------------------------------- the Config tab's helpers

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
}


def test_target_shortcuts_use_the_models_own_layer_names_once_read():
    from studio.core.models.layers import LinearModules
    from studio.core.sessions.config import describe_layers, target_shortcut

    assert target_shortcut("attention", None) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert len(target_shortcut("attention+mlp", None)) == 7 and target_shortcut("all-linear", None) == ["all-linear"]
    gpt2 = LinearModules(attention=("c_attn", "c_proj"), mlp=("c_fc",), other=())
    assert target_shortcut("attention+mlp", gpt2) == ["c_attn", "c_proj", "c_fc"]
    assert describe_layers(None).startswith("Shortcuts use Llama-style names")
    assert describe_layers(gpt2) == "Linear layers in this model:\n  attention: c_attn, c_proj\n  MLP: c_fc"


def test_copy_as_command_saves_one_file_per_run_or_model_and_quotes_it(tmp_path, monkeypatch):
    from pathlib import Path

    from studio.core.sessions.config import command_config_path, train_command

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path))
    config = RunConfig()
    config.model.name_or_path = "/models/My Llama 3/"
    assert command_config_path(config) == tmp_path / "configs" / "My-Llama-3.toml"
    config.name = "night run #2"
    assert command_config_path(config).name == "night-run-2.toml"
    assert train_command(Path("/a b/run.toml"), windows=False) == "finetune-studio train '/a b/run.toml'"
    assert train_command(Path("C:/a b/run.toml"), windows=True) == 'finetune-studio train "C:/a b/run.toml"'


def test_model_shapes_are_read_once_and_again_after_a_download(tmp_path):
    from studio.core.sessions.config import ModelShapes

    folder = tmp_path / "tiny"
    shapes = ModelShapes()
    shape, why = shapes.get(str(folder))
    assert shape is None and why, "no config.json yet: the reason, not an exception"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert shapes.get(str(folder))[0] is None, "kept until told to read it again"
    shapes.forget(str(folder))
    shape, source = shapes.get(str(folder))
    assert shape is not None and shape.hidden_size == 64 and source


def test_layer_names_are_kept_per_model_and_trust(monkeypatch):
    from studio.core.models.layers import LinearModules
    from studio.core.sessions import config as config_session

    on_disk = {("org/cached", False): LinearModules(attention=("q_proj",), mlp=(), other=())}
    monkeypatch.setattr(config_session, "cached_linear_modules",
                        lambda model, trust_remote_code: on_disk.get((model, trust_remote_code)))
    layers = config_session.LayerNames()
    assert layers.known("org/cached", trust_remote_code=False).attention == ("q_proj",)
    assert ("org/cached", False) in layers and ("org/cached", True) not in layers
    assert layers.known("org/new", trust_remote_code=False) is None
    layers.remember("org/new", on_disk[("org/cached", False)], trust_remote_code=True)
    assert ("org/new", True) in layers and layers.known("org/new", trust_remote_code=False) is None
