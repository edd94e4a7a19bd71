"""Exports behave like the model in the app: merged weights, GGUF (f16 / q8_0) and the adapter folder.

Tolerances, and why:
- merged vs base + adapter: the merged model is stored in bfloat16 (8 significant bits), while the
  app runs base + adapter in float32 on CPU. Each merged weight is therefore off by up to 2^-9
  relative; on the demo's logits (|logit| ≤ ~11) that is ≤ 0.12 in practice. The test allows 0.25
  absolute and demands the same greedy token at every trained position (the smallest top-1 margin
  there is ~2, far above the rounding).
- GGUF f16 vs the merged model: exact — bf16 values are representable in f16, so after the same
  Q/K permutation the bits must match.
- GGUF q8_0: each block of 32 values is stored as int8 times one f16 scale d = max|x| / 127, so
  rounding is at most d/2, plus the scale's own f16 rounding (≤ 127 · d · 2^-11 ≈ 0.06 d): bound 0.6 d.
- llama.cpp vs transformers logits on random tiny models: ≤ 0.05 absolute (f16 weights and
  llama.cpp's f16 matmuls; observed ~0.011 with logits up to ~5).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from studio.core.export.adapter import export_adapter, export_adapter_zip
from studio.core.export.staging import ExportError
from studio.core.export.gguf import export_gguf, permute_qk
from studio.core.system.tasks import NO_TASK
from exports_shared import _tiny_model  # noqa: F401  (shared with the other half)

MERGE_LOGIT_TOLERANCE = 0.25
LLAMA_CPP_LOGIT_TOLERANCE = 0.05


def test_gguf_export_refuses_an_unsupported_architecture(tmp_path, run_studio):
    model = tmp_path / "gpt2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))

    with pytest.raises(ExportError, match="LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"):
        export_gguf(model, tmp_path / "out.gguf")
    result = run_studio("export", "gguf", model, "--output", tmp_path / "out.gguf")
    assert result.returncode == 2
    assert str(model) in result.stderr and "GPT2LMHeadModel" in result.stderr
    assert "Traceback" not in result.stderr


# --- GGUF for each supported family, checked against llama.cpp itself where it is installed ----------------------




@pytest.mark.parametrize("family, arch, permuted", [("llama3.1", "llama", True), ("mistral", "llama", True),
                                                    ("qwen2", "qwen2", False)])
def test_each_family_is_written_with_llama_cpp_names_and_layout(tmp_path, demo_assets, family, arch, permuted):
    import gguf
    import torch
    from transformers import AutoTokenizer

    model = _tiny_model(family, tmp_path / "model", demo_assets.model_dir)
    result = export_gguf(tmp_path / "model", tmp_path / "out" / "model.gguf")
    reader = gguf.GGUFReader(str(result.path))

    assert reader.fields["general.architecture"].contents() == arch
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" in tensors  # untied: the output head is its own tensor
    q = model.model.layers[1].self_attn.q_proj.weight.detach()
    k = model.model.layers[1].self_attn.k_proj.weight.detach()
    if permuted:
        q, k = permute_qk(q, 4, 4), permute_qk(k, 4, 2)
    assert np.array_equal(tensors["blk.1.attn_q.weight"].data, q.numpy().astype(np.float16))
    assert np.array_equal(tensors["blk.1.attn_k.weight"].data, k.numpy().astype(np.float16))
    if family == "qwen2":
        assert np.array_equal(tensors["blk.0.attn_q.bias"].data, model.model.layers[0].self_attn.q_proj.bias.detach().numpy())
    if family == "llama3.1":
        assert "rope_freqs.weight" in tensors

    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra (pip install -e .[llama-cpp]; it compiles llama.cpp)")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What are your support hours on Saturday?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = (tokenizer(prompt, add_special_tokens=False)["input_ids"] * 10)[:200]  # past the llama3.1 scaling edge
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(result.path), n_ctx=256, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    assert np.abs(got - expected).max() < LLAMA_CPP_LOGIT_TOLERANCE


# --- the trained demo: merge, GGUF, llama.cpp, CLI --------------------------------------------------------------------


def _conversations(demo_assets) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def merged(trained_run, tmp_path_factory) -> Path:
    from studio.core.export.merge import merge_adapter

    return merge_adapter(trained_run, tmp_path_factory.mktemp("merge") / "merged")


@pytest.fixture(scope="module")
def ggufs(merged, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(merged, folder / f"demo-{t}.gguf", gguf_type=t) for t in ("f16", "q8_0")}


def test_the_merged_model_computes_the_logits_of_base_plus_adapter(merged, trained_run, demo_assets):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.data.tokens import encode_example

    tokenizer = AutoTokenizer.from_pretrained(str(trained_run / "adapter"))
    rows = [encode_example(tokenizer, {"messages": m}) for m in _conversations(demo_assets)]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    trained = torch.tensor([r["labels"][1:] + [-100] * (width - len(r["labels"]) + 1) for r in rows]) != -100

    base = AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir), dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, str(trained_run / "adapter")).eval()
    standalone = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        got = standalone(input_ids=ids, attention_mask=mask).logits

    real = mask.bool()
    assert (got - expected).abs()[real].max().item() < MERGE_LOGIT_TOLERANCE
    assert torch.equal(got.argmax(-1)[trained], expected.argmax(-1)[trained])


def test_the_merged_folder_is_a_complete_standalone_model(merged, trained_run):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from studio.core.system.demo import CHAT_TEMPLATE

    assert json.loads((merged / "config.json").read_text())["dtype"] in ("bfloat16", "float16")
    assert AutoConfig.from_pretrained(str(merged)).model_type == "llama"
    generation = GenerationConfig.from_pretrained(str(merged))
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    assert tokenizer.eos_token_id in (generation.eos_token_id if isinstance(generation.eos_token_id, list)
                                      else [generation.eos_token_id]), "generation stops at the end-of-turn token"
    assert tokenizer.chat_template == CHAT_TEMPLATE
    card = (merged / "README.md").read_text(encoding="utf-8")
    final_loss = [json.loads(line) for line in (trained_run / "events.jsonl").read_text().splitlines()][-1]["final_loss"]
    assert f"{final_loss:.4f}" in card and "dataset.jsonl" in card and "![Training loss](loss-curve.svg)" in card
    assert (merged / "loss-curve.svg").is_file()


def _dequantized(tensor, gguf) -> np.ndarray:
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return data.reshape(tuple(reversed([int(n) for n in tensor.shape])))


def test_the_gguf_tensors_tokenizer_and_template_match_the_merged_model(merged, ggufs, trained_run):
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from studio.core.export.ollama import strip_generation_markers

    weights = {}
    for file in merged.glob("*.safetensors"):
        weights.update(load_file(str(file)))
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    tokenizer = AutoTokenizer.from_pretrained(str(trained_run / "adapter"))

    for gguf_type, export in ggufs.items():
        reader = gguf.GGUFReader(str(export.path))
        tensors = {t.name: t for t in reader.tensors}
        expected_names = {name_map.get_name(n, try_suffixes=(".weight",)) for n in weights if n != "lm_head.weight"}
        assert set(tensors) == expected_names, "every tensor, and the tied output head left to llama.cpp"
        for hf_name, value in weights.items():
            if hf_name == "lm_head.weight":
                continue
            value = value.float()
            if hf_name.endswith("q_proj.weight"):
                value = permute_qk(value, 4, 4)
            elif hf_name.endswith("k_proj.weight"):
                value = permute_qk(value, 4, 2)
            value = value.numpy()
            tensor = tensors[name_map.get_name(hf_name, try_suffixes=(".weight",))]
            if value.ndim == 1:
                assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
                assert np.array_equal(tensor.data, value)
            elif gguf_type == "f16":
                assert np.array_equal(tensor.data, value.astype(np.float16)), hf_name
            else:
                assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
                blocks = value.reshape(-1, 32)
                scale = np.abs(blocks).max(axis=1, keepdims=True) / 127
                error = np.abs(_dequantized(tensor, gguf).reshape(-1, 32) - blocks)
                assert (error <= 0.6 * scale + 1e-12).all(), hf_name

        fields = reader.fields
        assert fields["tokenizer.ggml.model"].contents() == "gpt2"
        assert fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
        vocab = tokenizer.get_vocab()
        assert fields["tokenizer.ggml.tokens"].contents() == sorted(vocab, key=vocab.get)
        assert fields["tokenizer.ggml.bos_token_id"].contents() == tokenizer.bos_token_id
        assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
        assert fields["tokenizer.ggml.padding_token_id"].contents() == tokenizer.pad_token_id
        assert len(fields["tokenizer.ggml.merges"].contents()) == len(json.loads(
            (trained_run / "adapter" / "tokenizer.json").read_text())["model"]["merges"])
        assert fields["tokenizer.chat_template"].contents() == strip_generation_markers(tokenizer.chat_template)


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_llama_cpp_answers_the_trained_questions_from_the_gguf(ggufs, demo_assets, gguf_type, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see docs/BENCHMARKS.md)")
    from studio.core.eval.cases import EvalCase
    from studio.core.eval.verify import _llama_cpp_replies

    conversations = _conversations(demo_assets)
    cases = [EvalCase(id=str(i), prompt=(messages[0],), expected=messages[1]["content"], line=i)
             for i, messages in enumerate(conversations, start=1)]
    # In llama.cpp's own process (a crash there fails this test instead of ending the test run); the chat
    # template embedded in the file renders the prompt and generation stops at its end-of-generation token.
    replies = _llama_cpp_replies(ggufs[gguf_type].path, cases, 120, tmp_path / "llama", NO_TASK)
    for case in cases:
        reply, truncated, error = replies[case.id]
        assert error == "" and not truncated, (case.id, error)
        assert reply == case.expected


def test_cli_exports_gguf_straight_from_a_run(trained_run, tmp_path, run_studio):
    output = tmp_path / "ollama" / "support-bot.gguf"
    result = run_studio("export", "gguf", trained_run, "--output", output, "--type", "q8_0")

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(output), str(output.parent / "support-bot.Modelfile")]
    modelfile = (output.parent / "support-bot.Modelfile").read_text(encoding="utf-8")
    assert "FROM ./support-bot.gguf" in modelfile and 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert "TEMPLATE" in modelfile and "ollama create my-model -f support-bot.Modelfile" in modelfile
    assert "![Training loss](support-bot.loss-curve.svg)" in (output.parent / "support-bot.md").read_text()
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "support-bot.Modelfile", "support-bot.finetune_studio.json", "support-bot.gguf", "support-bot.loss-curve.svg",
        "support-bot.md"], "no temporary merge left"


def test_the_adapter_exports_as_a_peft_folder_and_a_zip(trained_run, tmp_path):
    from peft import PeftConfig

    folder = export_adapter(trained_run, tmp_path / "support-adapter")
    assert PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja",
            "README.md", "loss-curve.svg"} <= {p.name for p in folder.iterdir()}
    assert "Finetune Studio" in (folder / "README.md").read_text(encoding="utf-8")

    archive = export_adapter_zip(trained_run, tmp_path / "support-adapter.zip")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert "support-adapter/adapter_model.safetensors" in names
    assert all(name.startswith("support-adapter/") for name in names)
    shutil.rmtree(folder)
