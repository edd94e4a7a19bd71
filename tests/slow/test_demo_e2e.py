"""The offline demo builder: files, idempotence, tokenizer, chat template and the untrained model."""

from __future__ import annotations

import json

import pytest

from studio.core.system import demo
from studio.core.system.demo import build_demo, is_demo_built, load_demo_conversations
from demo_shared import assets, home, tokenizer  # noqa: F401  (shared with the other half)








def test_build_is_deterministic(assets, tmp_path):
    again = build_demo(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again.model_dir / name).read_bytes() == (assets.model_dir / name).read_bytes(), name


def test_outdated_demo_is_rebuilt(tmp_path):
    built = build_demo(tmp_path / "demo")
    (built.root / demo.MARKER_FILE).write_text(json.dumps({"demo_version": demo.DEMO_VERSION - 1}))
    assert not is_demo_built(built.root)
    messages: list[str] = []
    build_demo(built.root, progress=messages.append)
    assert "Writing model…" in messages
    assert is_demo_built(built.root)


def test_interrupted_rebuild_keeps_the_previous_demo(tmp_path, monkeypatch):
    built = build_demo(tmp_path / "demo")
    (built.root / "demo.toml").write_text("# the user's own settings\n")
    weights = (built.model_dir / "model.safetensors").read_bytes()

    def crash(tokenizer):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_build_model", crash)
    with pytest.raises(KeyboardInterrupt):
        build_demo(built.root, force=True)
    assert is_demo_built(built.root)
    assert (built.model_dir / "model.safetensors").read_bytes() == weights
    assert (built.root / "demo.toml").read_text() == "# the user's own settings\n"
    assert not list(built.root.glob(".build-*"))


def test_untrained_model_does_not_know_the_answers(assets, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(assets.model_dir).eval()
    for record in load_demo_conversations():
        question, answer = record["messages"]
        inputs = tokenizer.apply_chat_template([question], add_generation_prompt=True, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert reply != answer["content"]
