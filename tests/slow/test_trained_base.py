"""An adapter meets the weights it was trained on: chat, merge and GGUF of a 4-bit-trained run answer like it.

The model here is the demo model with one outlier per NF4 block (demo.make_nf4_sensitive), so its 4-bit
copy is a clearly different function from its 16-bit one, as a real pretrained model's is. An adapter
trained on the 4-bit copy answers its training prompts; put on the 16-bit weights it mostly does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NEW_TOKENS = 40


def _prompts(demo_assets) -> list[list[dict[str, str]]]:
    rows = [json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    return [messages[:-1] for messages in rows]


def _greedy(model, tokenizer, prompts) -> list[str]:
    """Greedy replies with plain transformers (the same decoding for every model compared)."""
    import torch

    replies = []
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        replies.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return replies


def _adapter_on(run: Path, *, four_bit: bool):
    """The run's adapter with plain PEFT, on the base quantised as in training (or on its 16-bit weights)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    base = json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    kwargs = {}
    if four_bit:
        kwargs = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                             bnb_4bit_use_double_quant=True,
                                                             bnb_4bit_compute_dtype=torch.float32),
                      device_map={"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **kwargs)
    return PeftModel.from_pretrained(model, str(run / "adapter")).eval()


@pytest.fixture(scope="module")
def tokenizer(sensitive_run):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(sensitive_run / "adapter"))


@pytest.fixture(scope="module")
def trained_replies(sensitive_run, tokenizer, demo_assets) -> list[str]:
    """What the trained model says: the adapter on the 4-bit base it was trained against."""
    return _greedy(_adapter_on(sensitive_run, four_bit=True), tokenizer, _prompts(demo_assets))


def _same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


def test_the_model_is_one_where_the_16_bit_weights_change_the_replies(sensitive_run, tokenizer, trained_replies,
                                                                         demo_assets):
    # Without this the other tests would pass on a model where the fault cannot show.
    wanted = [messages[-1]["content"] for messages in
              (json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text().splitlines())]
    assert _same(trained_replies, wanted) == len(wanted), "the adapter learned its data on the 4-bit base"
    on_16_bit = _greedy(_adapter_on(sensitive_run, four_bit=False), tokenizer, _prompts(demo_assets))
    assert _same(on_16_bit, trained_replies) <= len(wanted) - 3


def test_the_trained_base_is_read_from_the_run(sensitive_run):
    from studio.core.models.trained_base import TrainedBase

    trained = TrainedBase.of_adapter(sensitive_run / "adapter")
    assert (trained.quantization, trained.quant_type, trained.double_quant) == ("4bit", "nf4", True)
    assert trained.compute_dtype == "float32"  # what the CPU run resolved "auto" to, from its started event
    assert trained.base == json.loads((sensitive_run / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]


def test_chat_loads_a_4_bit_run_on_its_4_bit_base_by_default(sensitive_run, trained_replies, demo_assets):
    from studio.core.chat.model import ChatModel

    chat = ChatModel.load(sensitive_run)
    assert chat.load_in_4bit and "as it was trained" in chat.loaded_as
    replies = [chat.reply(p, max_new_tokens=NEW_TOKENS) for p in _prompts(demo_assets)]
    assert replies == trained_replies
    chat.unload()

    original = ChatModel.load(sensitive_run, weights="original")
    assert not original.load_in_4bit and "original weights" in original.loaded_as
    original.unload()


def test_the_merged_model_answers_like_the_trained_model(sensitive_run, tokenizer, trained_replies, demo_assets,
                                                         tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.core.export.merge import merge_adapter

    merged = merge_adapter(sensitive_run, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    assert _greedy(model, tokenizer, _prompts(demo_assets)) == trained_replies
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert "| Merged into | the 4-bit NF4 (double quantisation) base weights it was trained on, dequantised |" in card
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())


@pytest.mark.parametrize("gguf_type", ["f16"])
def test_the_gguf_answers_like_the_trained_model(sensitive_run, tokenizer, trained_replies, demo_assets, tmp_path,
                                                  gguf_type):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.core.export.gguf import export_gguf

    result = export_gguf(sensitive_run, tmp_path / "gguf" / f"model-{gguf_type}.gguf", gguf_type=gguf_type)
    # transformers reads the GGUF back (un-permuting Q/K as llama.cpp's layout requires): the file's weights.
    model = AutoModelForCausalLM.from_pretrained(str(result.path.parent), gguf_file=result.path.name,
                                                 dtype=torch.float32).eval()
    assert _greedy(model, tokenizer, _prompts(demo_assets)) == trained_replies
    assert any("trained on, dequantised" in note for note in result.notes)


def test_merging_into_the_original_weights_is_a_choice_with_its_agreement_shown(sensitive_run, tmp_path,
                                                                               run_studio):
    output = tmp_path / "merged-original"
    result = run_studio("merge", sensitive_run, "--output", output, "--base-weights", "original")

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "finetune_studio.json").read_text(encoding="utf-8"))
    identical, total = (int(n) for n in summary["agreement"].split()[0].split("/"))
    assert total == 8 and identical <= 5, summary["agreement"]
    assert "original 16-bit weights" in summary["merged_into"]
    card = (output / "README.md").read_text(encoding="utf-8")
    assert f"| Agreement with the trained model | {identical}/8 greedy replies identical" in card
    assert f"Agreement: {identical}/8" in result.stderr


def test_cli_chat_answers_like_the_trained_model_and_takes_the_tab_settings(sensitive_run, trained_replies,
                                                                           demo_assets, run_studio):
    from studio.core.chat.model import ChatModel

    prompt = _prompts(demo_assets)[2][-1]["content"]
    result = run_studio("chat", "--model", sensitive_run, "--prompt", prompt, "--max-new-tokens", NEW_TOKENS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip("\n") == trained_replies[2]

    system = "Sen Nimbus çağrı merkezinin asistanısın."
    result = run_studio("chat", "--model", sensitive_run, "--prompt", prompt, "--system", system,
                        "--max-new-tokens", 12, "--temperature", "0.8", "--top-p", "0.9", "--seed", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    chat = ChatModel.load(sensitive_run)
    expected = chat.reply([{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                          max_new_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    assert result.stdout.rstrip("\n") == expected


def test_the_chat_repl_has_clear_exit_and_help(sensitive_run, trained_replies, demo_assets, run_studio):
    first, second = (p[-1]["content"] for p in _prompts(demo_assets)[:2])
    stdin = f"/help\n{first}\n/clear\n{second}\n/exit\nnever read\n"
    result = run_studio("chat", "--model", sensitive_run, "--max-new-tokens", NEW_TOKENS, input=stdin)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "/clear starts a new conversation" in result.stderr and "(new conversation)" in result.stderr
    # After /clear the second question is asked afresh: the reply is the trained single-turn answer.
    assert trained_replies[0] in result.stdout and trained_replies[1] in result.stdout
    assert "4-bit NF4" in result.stderr  # the banner says which weights answer
