"""The offline demo builder: files, idempotence, tokenizer, chat template and the untrained model."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from studio.core.metrics.tool_calls import extract_tool_calls
from studio.core.system import demo
from studio.core.system.demo import build_demo, default_demo_dir, is_demo_built, load_demo_conversations
from studio.core.system.paths import HOME_ENV_VAR, runs_dir, user_data_dir
from demo_shared import assets, home, tokenizer  # noqa: F401  (shared with the other half)

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)








def test_data_folders_follow_the_home_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(HOME_ENV_VAR, str(tmp_path))
    assert user_data_dir() == tmp_path
    assert runs_dir() == tmp_path / "runs"
    assert default_demo_dir() == tmp_path / "demo"


def test_build_writes_model_dataset_and_marker(assets, home):
    assert assets.root == home / "demo"
    assert assets.config_path == assets.root / "demo.toml"
    for name in MODEL_FILES:
        assert (assets.model_dir / name).is_file(), name
    assert assets.dataset_path.read_bytes() == (demo.demo_resource_dir() / "dataset.jsonl").read_bytes()
    assert json.loads((assets.root / demo.MARKER_FILE).read_text()) == {"demo_version": demo.DEMO_VERSION}
    assert not list(assets.root.glob(".build-*")), "staging folder left behind"
    assert is_demo_built(assets.root)


def test_second_build_returns_at_once_without_importing_torch(assets):
    weights = assets.model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    script = (
        "import sys; from pathlib import Path; from studio.core.system.demo import build_demo; "
        f"build_demo(Path({str(assets.root)!r}), progress=print); print('torch' in sys.modules)"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert time.perf_counter() - started < 10
    assert result.stdout.strip() == "False", "a built demo was rebuilt, or torch was imported to check it"
    assert weights.stat().st_mtime_ns == before


def test_interrupted_first_build_is_not_taken_for_a_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_build_model", lambda tokenizer: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_demo(tmp_path / "demo")
    assert not is_demo_built(tmp_path / "demo")
    assert not (tmp_path / "demo" / "model").exists()


def test_demo_conversations_are_ten_distinct_questions():
    records = load_demo_conversations()
    assert len(records) == 10
    for record in records:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    first_words = {record["messages"][0]["content"].split()[0] for record in records}
    assert len(first_words) == 10
    # The demo's calls are written the way the tool-call metric (and the reference user) reads them.
    calls = [extract_tool_calls(record["messages"][1]["content"]) for record in records]
    assert sum(bool(found) for found in calls) == 4
    assert all(call.form == "tool_code" and call.valid and call.arguments for found in calls for call in found)


def test_tokenizer_round_trips_non_ascii_text(tokenizer):
    text = 'İzmir\'de arıza var mı? Muğla, Beşiktaş, Üsküdar — "çok güzel" ğ ş ı ö ü 🙂  two  spaces .'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(tokenizer("Nimbus support is open every day.", add_special_tokens=False)["input_ids"]) <= 8


def test_special_tokens_match_the_model_config(assets, tokenizer):
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(assets.model_dir)
    generation = GenerationConfig.from_pretrained(assets.model_dir)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert tokenizer.bos_token == "<|begin_of_text|>"
    assert tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id,
        eot,
        tokenizer.pad_token_id,
    )
    assert set(generation.eos_token_id) == {eot, tokenizer.convert_tokens_to_ids("<|end_of_text|>")}
    assert config.vocab_size == len(tokenizer)


def test_chat_template_renders_llama3_turns(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "İzmir'de arıza var mı?"},
        {"role": "assistant", "content": 'Bakıyorum. CALL check_outage(city="Izmir")'},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nİzmir'de arıza var mı?<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>\n\nBakıyorum. CALL check_outage(city="Izmir")<|eot_id|>'
    )
    prompt = tokenizer.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nİzmir'de arıza var mı?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert tokenizer.decode(ids) == rendered
    assert ids.count(tokenizer.bos_token_id) == 1


def test_trained_tokens_are_the_assistant_reply_and_its_end(tokenizer):
    messages = load_demo_conversations()[2]["messages"]
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_assistant_tokens_mask=True)
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True)["input_ids"]
    assert full["input_ids"][: len(prompt)] == prompt
    trained = [i for i, keep in zip(full["input_ids"], full["assistant_masks"]) if keep]
    assert trained == full["input_ids"][len(prompt) :]
    assert tokenizer.decode(trained) == messages[1]["content"] + "<|eot_id|>"


def test_model_is_small_and_loads(assets):
    import torch
    from transformers import AutoModelForCausalLM

    assert (assets.model_dir / "model.safetensors").stat().st_size < 4_000_000
    model = AutoModelForCausalLM.from_pretrained(assets.model_dir)
    assert model.config.model_type == "llama"
    for name, module in model.model.layers.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert module.in_features % 64 == 0 and module.out_features % 64 == 0, name


def test_model_loads_in_4bit_with_its_weights_intact(assets):
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    full = AutoModelForCausalLM.from_pretrained(assets.model_dir)
    quantized = AutoModelForCausalLM.from_pretrained(
        assets.model_dir, quantization_config=quantization, device_map="cpu"
    )
    full_proj = full.model.layers[0].mlp.down_proj.weight
    packed = quantized.model.layers[0].mlp.down_proj.weight
    restored = dequantize_4bit(packed.data, packed.quant_state)
    assert (restored - full_proj).abs().max() < 0.01 * full_proj.abs().max()
