"""The VRAM estimate: every term against a hand computation, the verdict, and `finetune-studio estimate`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from studio.core.config.settings import RunConfig
from studio.core.models.source import bundled_shapes
from studio.core.plan.vram import (
    ALLOCATOR_OVERHEAD, CUDA_CONTEXT_BYTES, FITS, GIB, TIGHT, WONT_FIT, ModelShape, ShapeError, estimate_vram,
)
from vram_shared import LLAMA_8B_TOML  # noqa: F401  (shared with the other half)

# A toy Llama: hidden 64, MLP 128, 2 layers, 4 heads of 16, 2 key/value heads, vocabulary 256.
TOY = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "tie_word_embeddings": False,
}
H, I, L, V, KV, HEADS = 64, 128, 2, 256, 32, 4  # KV = 2 heads × head_dim 16


def _config(*, grpo: dict | None = None, **training) -> RunConfig:
    config = RunConfig()
    config.model.name_or_path = "toy"
    config.data.train_file = "train.jsonl"
    config.lora.r = 8
    config.lora.lora_dropout = 0.0
    config.training.per_device_train_batch_size = 1
    config.training.max_length = 16
    config.training.gradient_checkpointing = True
    config.training.optim = "paged_adamw_8bit"
    for key, value in training.items():
        assert hasattr(config.training, key), key  # a method's own setting is in its section
        setattr(config.training, key, value)
    for key, value in (grpo or {}).items():
        assert hasattr(config.grpo, key), key
        setattr(config.grpo, key, value)
    return config


def _shape(**overrides) -> ModelShape:
    return ModelShape.from_config({**TOY, **overrides}, "toy")


def _load_bundled(name: str) -> ModelShape:
    return ModelShape.from_config(json.loads(bundled_shapes()[name].read_text()), name)


# ------------------------------------------------------------------ shapes


def test_published_parameter_counts_come_out_of_the_bundled_configs():
    expected = {"llama-3.2-1b": 1.236e9, "llama-3.2-3b": 3.213e9, "llama-3.1-8b": 8.030e9,
                "qwen2.5-7b": 7.616e9, "mistral-7b": 7.248e9}
    assert set(bundled_shapes()) == set(expected)
    for name, count in expected.items():
        assert _load_bundled(name).parameter_count == pytest.approx(count, rel=2e-3), name


def test_toy_shape_linear_layers():
    shape = _shape()
    assert shape.head_dim == 16 and shape.q_dim == 64 and shape.kv_dim == KV
    per_layer = H * 64 + 2 * H * KV + 64 * H + 3 * H * I
    assert shape.decoder_linear_params == L * per_layer


def test_a_mixture_of_experts_model_is_refused_by_name():
    with pytest.raises(ShapeError, match="mixture-of-experts"):
        ModelShape.from_config({**TOY, "num_local_experts": 8}, "mixtral")


def test_a_config_without_sizes_names_what_is_missing():
    with pytest.raises(ShapeError, match="hidden_size"):
        ModelShape.from_config({"model_type": "llama", "vocab_size": 10}, "broken")


def test_a_vision_language_config_is_read_from_its_text_config():
    shape = ModelShape.from_config({"model_type": "llava", "text_config": TOY}, "vlm")
    assert shape.hidden_size == H and shape.vocab_size == V


# ------------------------------------------------------------------ each term by hand


def test_every_term_of_a_qlora_estimate_matches_a_hand_computation():
    shape, config = _shape(), _config()
    parts = estimate_vram(shape, config).breakdown
    linear_params = L * (H * 64 + 2 * H * KV + 64 * H + 3 * H * I)

    # NF4 + double quant: 4 bits + an 8-bit absmax per 64 + an fp32 constant per 64·256 weights.
    assert parts["base weights, NF4 4-bit + double quant"] == round(linear_params * (4 + 8 / 64 + 32 / 16384) / 8)
    assert parts["embeddings, 16-bit"] == V * H * 2
    assert parts["lm_head, 16-bit"] == V * H * 2
    assert parts["norms and biases"] == (2 * L + 1) * H * 2

    # all-linear: r·(in + out) for q, k, v, o, gate, up, down, in bf16 (TRL casts a quantised model's adapter).
    lora_params = L * 8 * ((H + 64) + 2 * (H + KV) + (64 + H) + 2 * (H + I) + (I + H))
    assert parts["LoRA weights"] == lora_params * 2
    assert parts["LoRA gradients"] == lora_params * 2
    # bitsandbytes keeps fp32 states for tensors under 4096 elements: every toy LoRA matrix is that small.
    assert parts["optimizer states, paged 8-bit AdamW"] == lora_params * 8

    # Gradient checkpointing: one bf16 layer input per layer per token, plus one layer recomputed.
    # The frozen base layers save no input; with no LoRA dropout, lora_A keeps its input once per
    # distinct tensor: the attention norm's output (q, k, v), the MLP norm's output (gate, up) and the MLP
    # product (down); o's input is the attention kernel's output, which the kernel keeps already (one storage,
    # measured in tests/core/test_planner.py).
    tokens = 16
    per_layer = (
        2 * 4 * H  # two RMSNorms: their fp32 copy of the input
        + 2 * (64 + 2 * KV + 64)  # the attention kernel's q, k, v and output (batch 1: no repeated k/v)
        + 4 * HEADS  # log-sum-exp
        + 3 * 2 * I  # gate, up, silu(gate)
        + 2 * 8 * 7  # lora_A outputs
        + 2 * (H + H + I)  # lora_A inputs
    )
    recomputed = tokens * per_layer
    assert parts["activations, gradient checkpointing"] == tokens * (L * 2 * H + 4 * H) + recomputed

    # The backward workspace: the gradient in flight and one base layer dequantised (the MLP's H x I).
    workspace = tokens * 2 * 2 * H + H * I * 2
    assert parts["backward workspace"] == workspace
    # TRL's chunked LM head (one tokens x vocab tile in bf16, hidden states, fp32 gradient, stats) runs before
    # the layers' backward pass: it counts only what it needs beyond the recomputed layer and the workspace.
    loss = tokens * V * 2 + tokens * (2 * H + 4 * H + 2 * H + 28)
    assert parts["logits, chunked LM head"] == max(0, loss - recomputed - workspace)
    allocated = sum(size for name, size in parts.items()
                    if name not in ("allocator overhead", "CUDA context", "optimizer states, paged 8-bit AdamW"))
    assert parts["allocator overhead"] == round(allocated * ALLOCATOR_OVERHEAD)
    assert parts["CUDA context"] == CUDA_CONTEXT_BYTES


def test_tied_embeddings_are_counted_once():
    untied = estimate_vram(_shape(), _config()).breakdown
    tied = estimate_vram(_shape(tie_word_embeddings=True), _config()).breakdown
    assert "lm_head, 16-bit" not in tied
    assert tied["embeddings = lm_head (tied), 16-bit"] == untied["embeddings, 16-bit"] == V * H * 2


def test_quantisation_modes():
    shape = _shape()
    linear_params = shape.decoder_linear_params
    config = _config()
    config.quantization.bnb_4bit_use_double_quant = False
    assert estimate_vram(shape, config).breakdown["base weights, NF4 4-bit"] == round(linear_params * 4.5 / 8)
    config.quantization.mode = "8bit"
    out_features_per_layer = 64 + 2 * KV + H + 2 * I + H
    assert estimate_vram(shape, config).breakdown["base weights, 8-bit"] == linear_params + L * out_features_per_layer * 4
    config.quantization.mode = "none"
    parts = estimate_vram(shape, config).breakdown
    assert parts["base weights, 16-bit"] == linear_params * 2
    assert parts["LoRA weights"] == shape_lora_params(shape, 8) * 4, "PEFT keeps a 16-bit model's adapter in fp32"


def shape_lora_params(shape: ModelShape, r: int) -> int:
    return shape.num_hidden_layers * r * sum(layer.in_features + layer.out_features for layer in shape.layer_linears())


def test_optimizer_states_by_optimizer_on_a_real_shape():
    shape = _load_bundled("llama-3.1-8b")
    n = shape_lora_params(shape, 16)
    assert n == 41_943_040  # r 16 on every linear layer of Llama-3.1-8B
    config = _config(optim="adamw_torch")
    config.lora.r = 16
    assert estimate_vram(shape, config).breakdown["optimizer states, AdamW"] == 2 * 2 * n  # two bf16 states
    config.training.optim = "adamw_8bit"
    states = estimate_vram(shape, config).breakdown["optimizer states, 8-bit AdamW"]
    assert 2 * n < states < 2 * n * 1.04  # one byte per state + an fp32 absmax per 256
    config.training.optim = "sgd"
    assert estimate_vram(shape, config).breakdown["optimizer states, SGD"] == 0
    config.training.optim = "auto"
    assert "optimizer states, paged 8-bit AdamW" in estimate_vram(shape, config).breakdown


def test_only_the_named_target_modules_get_an_adapter():
    shape = _shape()
    config = _config()
    config.lora.target_modules = ["q_proj", "v_proj", "not_a_layer"]
    estimate = estimate_vram(shape, config)
    assert estimate.breakdown["LoRA weights"] == L * 8 * ((H + 64) + (H + KV)) * 2
    assert any("not_a_layer" in note for note in estimate.notes)


def test_activations_grow_with_length_batch_and_rank_and_shrink_with_checkpointing():
    shape = _load_bundled("llama-3.1-8b")

    def total(**training) -> int:
        return estimate_vram(shape, _config(**training)).total

    assert total(max_length=2048) > total(max_length=1024) > total(max_length=512)
    assert total(per_device_train_batch_size=2) > total(per_device_train_batch_size=1)
    assert total(gradient_checkpointing=False) > total(gradient_checkpointing=True)
    high_rank = _config()
    high_rank.lora.r = 64
    assert estimate_vram(shape, high_rank).total > total()
    no_ckpt = estimate_vram(shape, _config(gradient_checkpointing=False, max_length=2048)).breakdown
    ckpt = estimate_vram(shape, _config(max_length=2048)).breakdown
    assert no_ckpt["activations, no checkpointing"] > 8 * ckpt["activations, gradient checkpointing"]


def test_full_logits_dominate_for_a_128k_vocabulary():
    shape = _load_bundled("llama-3.1-8b")
    full = estimate_vram(shape, _config(max_length=2048), logits="full").breakdown
    # ≈ 2.9 GiB, of which the recomputed layer and the workspace already hold a part.
    beside = full["activations, gradient checkpointing"] - 2048 * (32 * 2 * 4096 + 4 * 4096) + full["backward workspace"]
    assert full["logits, fp32 loss over the vocabulary"] == 2048 * 128_256 * 12 - beside
    chunked = estimate_vram(shape, _config(max_length=2048)).breakdown
    assert chunked["logits, chunked LM head"] < full["logits, fp32 loss over the vocabulary"] / 10


def test_the_8b_shape_at_2048_tokens_is_about_8_gib():
    shape = _load_bundled("llama-3.1-8b")
    config = _config(max_length=2048)
    config.lora.r = 16
    estimate = estimate_vram(shape, config)
    assert 7.4 * GIB < estimate.total < 9.5 * GIB
    assert math.isclose(estimate.breakdown["base weights, NF4 4-bit + double quant"] / GIB, 3.35, abs_tol=0.01)


def test_verdict_thresholds():
    estimate = estimate_vram(_shape(), _config())
    total = estimate.total
    assert estimate.verdict(total / 0.85) == FITS
    assert estimate.verdict(total) == TIGHT
    assert estimate.verdict(total / 1.05) == TIGHT
    assert estimate.verdict(total / 1.2) == WONT_FIT
    assert estimate.verdict(0) == WONT_FIT
    assert estimate.to_dict(int(total * 2))["verdict"] == FITS


# ------------------------------------------------------------------ the command line




def test_estimate_command_prints_the_breakdown_and_json(tmp_path, run_studio):
    config = tmp_path / "run.toml"
    config.write_text(LLAMA_8B_TOML, encoding="utf-8")
    text = run_studio("estimate", config, "--gpu-memory", "12GiB", timeout=120)
    assert text.returncode == 0, text.stderr
    assert "base weights, NF4 4-bit + double quant" in text.stdout
    assert "verdict: fits" in text.stdout

    shipped = Path(__file__).resolve().parents[3] / "benchmarks" / "llama-3.1-8b-qlora.toml"  # docs/BENCHMARKS.md
    result = run_studio("estimate", shipped, "--json", "--gpu-memory", "8GiB", timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["total_bytes"] == sum(document["breakdown_bytes"].values())
    assert document["verdict"] in (FITS, TIGHT, WONT_FIT)
    assert document["settings"]["max_length"] == 2048


# ------------------------------------------------------------------ the GPU benchmark's bookkeeping (runs on CPU)


def _benchmark_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "vram_accuracy.py"
    spec = importlib.util.spec_from_file_location("vram_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vram_accuracy"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_benchmark_matrix_configs_and_comparison():
    bench = _benchmark_module()
    cases = bench.matrix()
    assert len(cases) == 5 * 3 * 2 * 2 * 2
    assert {c.model for c in cases} == set(bundled_shapes())
    for case in cases[:8] + bench.quick_matrix():
        config = bench.case_config(case)
        config.validate()
        assert (config.training.max_length, config.training.per_device_train_batch_size, config.lora.r) == (
            case.seq, case.batch, case.r)
        assert config.training.gradient_checkpointing == case.gradient_checkpointing
    assert bench.compare(110, 100) == {"error": 0.1, "within_target": True}
    assert bench.compare(80, 100) == {"error": -0.2, "within_target": False}
    assert bench.compare(80, None)["error"] is None
    row = {"model": "llama-3.2-1b", "seq": 512, "batch": 1, "gradient_checkpointing": True, "r": 16,
           "estimate_bytes": 2 * GIB, "measured_bytes": int(2.1 * GIB), **bench.compare(2 * GIB, int(2.1 * GIB))}
    table = bench.markdown_table([row])
    assert "| llama-3.2-1b | 512 | 1 | on | 16 | 2.00 | 2.10 | -4.8% | yes |" in table


def test_benchmark_dry_run_prints_the_matrix_with_estimates(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "vram_accuracy.py"
    out = tmp_path / "dry.json"
    result = subprocess.run([sys.executable, str(script), "--dry-run", "--models", "llama-3.2-1b,llama-3.1-8b",
                             "--seq", "512,2048", "--batch", "1", "--checkpointing", "on", "--rank", "16",
                             "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 cases (dry run" in result.stdout
    assert "| llama-3.1-8b | 2048 | 1 | on | 16 | 7.64 |" in result.stdout
    rows = json.loads(out.read_text())
    assert [r["seq"] for r in rows] == [512, 2048, 512, 2048]


def test_grpo_generation_adds_the_kv_cache_only_where_it_outgrows_the_activations():
    # Checkpointed activations hold each layer's input (L × H per token); the KV cache holds L × 2 × KV per token of
    # prompt and reply: at KV = H / 2 and no long reply they are equal and generation adds nothing to the peak.
    sft = estimate_vram(_shape(), _config())
    short = estimate_vram(_shape(), _config(method="grpo", grpo={"num_generations": 2, "max_completion_length": 1}))
    assert short.breakdown["GRPO generation, KV cache"] == 0 and short.total == sft.total
    assert any("GRPO's generation" in note for note in short.notes)
    long = estimate_vram(_shape(), _config(method="grpo", grpo={"num_generations": 2, "max_completion_length": 1024}))
    kv_cache = 1 * (16 + 1024) * L * 2 * KV * 2  # batch 1, 16 prompt + 1024 reply tokens, 16-bit compute
    activations = next(v for k, v in long.breakdown.items() if k.startswith("activations"))
    assert long.breakdown["GRPO generation, KV cache"] == kv_cache - activations - long.breakdown["backward workspace"] > 0
    assert "GRPO generation, KV cache" not in sft.breakdown
