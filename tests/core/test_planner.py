"""Fit to the card: the memory levers' estimate terms by hand, the levers reaching TRL (and what TRL really runs:
its offloading hooks and its chunked loss with PEFT), and the planner's choices on known shapes and cards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.config.presets import GPU_PRESETS
from studio.core.config.settings import RunConfig
from studio.core.models.source import bundled_shapes
from studio.core.plan.fit import Card, DataLengths, FitPlan, context_line, cpu_estimate, longest_context, plan_fit
from studio.core.plan.speedups import Capabilities, plan_fast_path
from studio.core.plan.vram import (
    GIB, OFFLOAD_STASH_TENSORS, ModelShape, embedding_on_cpu_saving, estimate_vram, layer_activation_bytes_per_token,
    resolve_target_modules,
)

REPO = Path(__file__).resolve().parents[2]
# A toy Llama with 8 layers (more than the offloading stash of 5): hidden 64, MLP 128, 4 heads of 16, 2 kv heads.
TOY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 8,
       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}
H, I, L = 64, 128, 8


def _shape(name: str) -> ModelShape:
    return ModelShape.from_config(json.loads(bundled_shapes()[name].read_text()), name)


SHAPES = {name: _shape(name) for name in bundled_shapes()}


def _toy_config(**training) -> RunConfig:
    config = RunConfig()
    config.lora.r, config.lora.lora_dropout = 8, 0.0
    config.training.per_device_train_batch_size, config.training.max_length = 1, 16
    config.training.optim = "paged_adamw_8bit"
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def _per_token_layer(shape: ModelShape, config: RunConfig) -> float:
    adapted, _ = resolve_target_modules(shape, config.lora.target_modules)
    return layer_activation_bytes_per_token(
        shape, dtype_bytes=2, adapted=adapted, r=config.lora.r, lora_dropout=config.lora.lora_dropout,
        lora_in_fp32=False, use_dora=False, gqa_native=True, attn_implementation="sdpa", seq_len=16)


# ------------------------------------------------------------------ the estimate's terms


def test_offloading_with_checkpointing_keeps_only_the_stash_of_layer_inputs():
    shape = ModelShape.from_config(TOY, "toy")
    plain = estimate_vram(shape, _toy_config(gradient_checkpointing=True))
    offloaded = estimate_vram(shape, _toy_config(gradient_checkpointing=True, activation_offloading=True))
    tokens, per_layer = 16, _per_token_layer(shape, _toy_config())
    # Checkpointing keeps each of the 8 layers' 16-bit input (2·64 bytes a token) and the final norm's fp32 copy
    # (4·64), and recomputes one layer; offloading keeps 5 of those inputs on the card.
    assert plain.breakdown["activations, gradient checkpointing"] == round(
        tokens * (L * 2 * H + 4 * H) + tokens * per_layer)
    assert offloaded.breakdown["activations, checkpointing + offloading"] == round(
        tokens * (OFFLOAD_STASH_TENSORS * 2 * H + 4 * H) + tokens * per_layer)
    assert OFFLOAD_STASH_TENSORS == 5
    assert offloaded.settings["offloaded_bytes"] == tokens * L * 2 * H == 16_384
    assert any("16.0 KiB" in note or "pinned CPU RAM" in note for note in offloaded.notes)
    assert plain.settings["offloaded_bytes"] == 0 and plain.settings["activation_offloading"] is False


def test_offloading_without_checkpointing_keeps_one_layer_and_the_stash():
    shape = ModelShape.from_config(TOY, "toy")
    plain = estimate_vram(shape, _toy_config(gradient_checkpointing=False))
    offloaded = estimate_vram(shape, _toy_config(gradient_checkpointing=False, activation_offloading=True))
    tokens, per_layer = 16, _per_token_layer(shape, _toy_config())
    assert plain.breakdown["activations, no checkpointing"] == round(tokens * (L * per_layer + 4 * H))
    # One layer's saved tensors brought back, plus 5 copies in flight of the largest (an MLP tensor, 2·128 bytes).
    assert offloaded.breakdown["activations, offloading"] == round(tokens * (per_layer + 5 * 2 * I + 4 * H))
    assert offloaded.settings["offloaded_bytes"] == round(tokens * L * per_layer)


def test_few_layers_offload_nothing_that_checkpointing_keeps():
    shape = ModelShape.from_config({**TOY, "num_hidden_layers": 2}, "toy")
    plain = estimate_vram(shape, _toy_config(gradient_checkpointing=True)).breakdown
    offloaded = estimate_vram(shape, _toy_config(gradient_checkpointing=True, activation_offloading=True)).breakdown
    assert plain["activations, gradient checkpointing"] == offloaded["activations, checkpointing + offloading"]


def test_the_input_embedding_on_the_cpu_would_save_its_16_bit_size():
    config = RunConfig()
    assert embedding_on_cpu_saving(SHAPES["llama-3.1-8b"], config) == 128_256 * 4096 * 2 == 1_050_673_152
    assert embedding_on_cpu_saving(SHAPES["llama-3.2-3b"], config) == 0, "tied: the embedding is the output head"
    config.quantization.compute_dtype = "float32"
    assert embedding_on_cpu_saving(SHAPES["llama-3.1-8b"], config) == 128_256 * 4096 * 4


def test_a_cpu_estimate_counts_float32_adamw_and_no_cuda_context():
    config = _toy_config(optim="auto")
    config.quantization.mode = "none"
    shape = ModelShape.from_config(TOY, "toy")
    estimate = cpu_estimate(shape, config)
    assert "CUDA context" not in estimate.breakdown
    assert estimate.breakdown["base weights, 32-bit"] == shape.decoder_linear_params * 4
    assert estimate.settings["optim"] == "adamw_torch"


# ------------------------------------------------------------------ the switches reach the trainer


def test_activation_offloading_reaches_sft_config_on_a_gpu_and_not_on_a_cpu(tmp_path):
    from studio.core.train.factories import Hardware, sft_config

    config = RunConfig()
    config.training.activation_offloading = True
    config.training.gradient_checkpointing = False
    gpu = Hardware(device="cuda", compute_dtype="float32", optim="adamw_torch")
    args = sft_config(config, gpu, tmp_path, has_eval=False)
    assert args.activation_offloading is True
    assert args.activation_checkpointing is False
    cpu = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    assert sft_config(config, cpu, tmp_path, has_eval=False).activation_offloading is False
    config.training.activation_offloading = False
    assert sft_config(config, gpu, tmp_path, has_eval=False).activation_offloading is False


def test_the_speed_up_plan_says_whether_offloading_applies_and_why():
    config = RunConfig()
    cuda = Capabilities(device="cuda", compute_capability=(8, 9))
    off = {s.name: s for s in plan_fast_path(config, cuda, compute_dtype="bfloat16").speedups}
    assert "activation offloading" not in off, "not asked for: the log has the lines it had"
    config.training.activation_offloading = True
    on = {s.name: s for s in plan_fast_path(config, cuda, compute_dtype="bfloat16").speedups}
    assert on["activation offloading"].enabled and "layer inputs" in on["activation offloading"].note
    cpu = plan_fast_path(config, Capabilities(device="cpu"), compute_dtype="float32")
    line = {s.name: s for s in cpu.speedups}["activation offloading"]
    assert not line.enabled and "ignored" in line.note and line.note in cpu.summary()
    config.training.fast_path = False
    assert "activation offloading: on" in plan_fast_path(config, cuda, compute_dtype="bfloat16").summary()


# ------------------------------------------------------------------ what TRL really runs


@pytest.fixture(scope="module")
def demo_peft_model(demo_assets):
    """The demo model with its base in 4-bit NF4 (bitsandbytes, on the CPU) and a LoRA adapter on every linear."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.core.train.factories import Hardware, lora_config, quantization_config

    config = RunConfig()
    config.lora.lora_dropout = 0.0  # no randomness between the two passes compared
    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(demo_assets.model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=quantization_config(config, hardware))
    model = get_peft_model(model, lora_config(config))
    with torch.no_grad():  # lora_B starts at zero: give the adapter a non-trivial state so its gradients differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    return model


def _batch(seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 1000, (2, 48), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _gradients(model, context) -> dict:
    model.zero_grad(set_to_none=True)
    with context:
        loss = model(**_batch()).loss
        loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_trls_offloading_hooks_give_equal_gradients_on_a_4bit_peft_model(demo_peft_model, monkeypatch, checkpointing):
    """TRL's OffloadActivations (pack: copy each saved tensor to a new CPU buffer; unpack: bring it back with its
    strides) on the 4-bit PEFT demo model gives the same gradients as no hooks. TRL builds it only for an
    accelerator, so here the CPU stands in for the device: pinned memory and side streams are CUDA-only and off."""
    import contextlib

    import torch
    from trl.models import activation_offloading as trl_offloading

    model = demo_peft_model
    model.train()
    if checkpointing:
        model.base_model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        expected = _gradients(model, contextlib.nullcontext())
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'type'"):
            trl_offloading.get_act_offloading_ctx_manager(model)  # what SFTTrainer would do on this CPU-only torch
        monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cpu"))
        monkeypatch.setattr(torch.cpu, "empty_cache", lambda: None, raising=False)  # torch.cpu has none to empty
        context = trl_offloading.get_act_offloading_ctx_manager(model, use_pin_memory=False, use_streams=False)
        copied = []
        pack = context.pack_hook

        def counting_pack(tensor):
            tensor_id = pack(tensor)
            copied.append(context.tracker[tensor_id][1])  # True: copied out to a new buffer, brought back later
            return tensor_id

        context.pack_hook = counting_pack
        offloaded = _gradients(model, context)
    finally:
        if checkpointing:
            model.base_model.model.activation_checkpointing_disable()
    # Without checkpointing every saved activation is copied; with it only what the checkpointed layers keep (their
    # inputs: the demo model has 2 layers).
    assert sum(copied) >= (2 if checkpointing else 20), copied
    assert set(offloaded) == set(expected) and len(expected) > 0
    for name, grad in expected.items():
        assert torch.equal(offloaded[name], grad), name


def test_trls_chunked_loss_runs_with_peft_and_matches_the_full_logits_loss(demo_assets, tmp_path):
    """The estimate counts TRL's chunked LM head, not full logits, for the studio's QLoRA path: SFTTrainer puts its
    fused head on a PEFT model's base model, and its loss equals the full-logits loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer
    from trl.trainer.utils import FusedCausalLMOutput

    from studio.core.train.factories import Hardware, lora_config, quantization_config, sft_config

    config = RunConfig()
    config.lora.lora_dropout = 0.0
    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    model = AutoModelForCausalLM.from_pretrained(demo_assets.model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=quantization_config(config, hardware))
    rows = Dataset.from_dict({"input_ids": [list(range(5, 40))], "completion_mask": [[1] * 35]})
    trainer = SFTTrainer(model=model, args=sft_config(config, hardware, tmp_path, has_eval=False), train_dataset=rows,
                         processing_class=AutoTokenizer.from_pretrained(demo_assets.model_dir),
                         peft_config=lora_config(config))
    batch = _batch()
    peft_model = trainer.model
    assert hasattr(peft_model, "peft_config")
    with torch.no_grad():
        fused = peft_model(**batch, fused_lm_head=True)
        full = peft_model(**batch)
    assert isinstance(fused, FusedCausalLMOutput) and getattr(fused, "logits", None) is None
    assert full.logits.shape[-1] == peft_model.config.vocab_size, "without the flag: the full logits"
    assert torch.allclose(fused.loss, full.loss, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the planner


def _preset_config(key: str = "8gb") -> RunConfig:
    return next(p for p in GPU_PRESETS if p.key == key).build("m", "train.jsonl")


def _lengths(longest: int, typical: int, rows: int = 200) -> DataLengths:
    return DataLengths(tuple([typical] * (rows - 1) + [longest]))


def _check(plan: FitPlan) -> None:
    """Whatever it chose fits with the margin, and it says why."""
    assert plan.fits and plan.after.total <= 0.9 * plan.card.free_bytes, plan.after.format_table()
    assert plan.reasons and plan.reasons[-1].startswith("Estimate")


@pytest.mark.parametrize(("gb", "checkpointing", "offloading", "micro"), [
    (8, True, True, 1),      # the 8B shape at 2,000 tokens only fits an 8 GB card with its layer inputs offloaded
    (12, True, False, 2),    # 12 GB: checkpointing alone, two rows per pass
    (16, True, False, 4),
    (24, True, False, 8),    # 24 GB: the whole effective batch of 8 in one pass
])
def test_the_8b_shape_on_each_card(gb, checkpointing, offloading, micro):
    config = _preset_config()
    plan = plan_fit(SHAPES["llama-3.1-8b"], config, Card(gb * GIB), data=_lengths(2000, 600))
    _check(plan)
    t = plan.config.training
    assert (t.gradient_checkpointing, t.activation_offloading, t.per_device_train_batch_size) == (
        checkpointing, offloading, micro)
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 8, "the effective batch is kept"
    assert t.max_length == 2000 and plan.truncated_rows == 0
    assert "covers the longest example (2,000 tokens)" in plan.reasons[0]
    if offloading:
        assert any(r.startswith("Activation offloading on") for r in plan.reasons)
        assert any("input embedding in CPU RAM would free another 1002 MiB" in r for r in plan.reasons)
    else:
        assert any(r.startswith("Activation offloading off: not needed") for r in plan.reasons)


def test_the_3b_shape_trains_without_checkpointing_where_its_activations_fit():
    config = _preset_config()
    on_16 = plan_fit(SHAPES["llama-3.2-3b"], config, Card(16 * GIB), data=_lengths(2048, 900))
    _check(on_16)
    assert on_16.config.training.gradient_checkpointing is False
    assert any(r.startswith("Gradient checkpointing off: every layer's activations fit") for r in on_16.reasons)
    assert ("training.gradient_checkpointing", True, False) in on_16.changes(config)
    on_8 = plan_fit(SHAPES["llama-3.2-3b"], config, Card(8 * GIB), data=_lengths(2048, 900))
    _check(on_8)
    assert on_8.config.training.gradient_checkpointing is True
    assert any(r.startswith("Gradient checkpointing on: without it the run would need") for r in on_8.reasons)


def test_the_99th_percentile_when_the_longest_example_does_not_fit():
    # 2 of 200 rows are 20,000 tokens long: too long for the 8B shape on 12 GB; the 99th percentile, 1,500, fits.
    data = DataLengths(tuple([1500] * 198 + [20_000] * 2))
    plan = plan_fit(SHAPES["llama-3.1-8b"], _preset_config(), Card(12 * GIB), data=data)
    _check(plan)
    assert plan.config.training.max_length == 1500 and plan.truncated_rows == 2
    assert "covers 99% of the examples: 2 of 200 rows are longer and will be truncated" in plan.reasons[0]


def test_a_sample_of_the_rows_scales_the_truncation_count():
    data = DataLengths(tuple([100] * 99 + [5000]), total_rows=10_000)
    assert data.longer_than(100) == 100 and data.rows == 10_000 and data.percentile(99) == 100


def test_without_measured_lengths_the_configs_max_length_is_kept_and_said():
    config = _preset_config("12gb")
    plan = plan_fit(SHAPES["llama-3.1-8b"], config, Card(12 * GIB))
    _check(plan)
    assert plan.config.training.max_length == 2048 and "no token lengths are measured yet" in plan.reasons[0]


def test_where_nothing_fits_it_says_what_would():
    config = _preset_config()
    plan = plan_fit(SHAPES["llama-3.1-8b"], config, Card(8 * GIB), data=_lengths(16_384, 12_000), alternatives=SHAPES)
    assert not plan.fits and plan.changes(config) == [] and plan.after is plan.before
    # The longest example (16,384) and then the 99th percentile (12,000) were tried.
    assert plan.reasons[0].startswith("Nothing fits 8.0 GiB free at max_length 12,000, even with batch 1")
    longest = longest_context(SHAPES["llama-3.1-8b"], config, Card(8 * GIB))
    assert 1000 < longest < 12_000
    assert plan.suggestions[0] == (f"A max_length of {longest:,} tokens fits (truncates 200 of 200 rows), with "
                                   "batch 1, gradient checkpointing and activation offloading.")
    assert any(s.startswith("A smaller model: llama-3.2-") for s in plan.suggestions)


def test_a_card_too_small_for_the_weights_names_a_model_that_fits():
    plan = plan_fit(SHAPES["llama-3.1-8b"], _preset_config(), Card(4 * GIB), data=_lengths(1024, 512),
                    alternatives=SHAPES)
    assert not plan.fits
    assert plan.suggestions[0].startswith("Not even 8 tokens fit: the weights, adapter and context alone need")
    assert "A smaller model: llama-3.2-1b fits at 1,024 tokens" in plan.suggestions[1]


def test_the_longest_context_is_the_boundary_of_what_fits():
    config, card, shape = _preset_config(), Card(8 * GIB), SHAPES["llama-3.1-8b"]
    longest = longest_context(shape, config, card)
    at = plan_fit(shape, config, card, data=DataLengths((longest,)))
    beyond = plan_fit(shape, config, card, data=DataLengths((longest + 1,)))
    assert at.fits and not beyond.fits
    assert longest_context(shape, config, Card(12 * GIB)) > longest
    assert context_line(shape, config, card) == (f"Longest context that fits 8.0 GiB free: {longest:,} tokens "
                                                 "(batch 1, gradient checkpointing, activation offloading).")
    assert "none" in context_line(shape, config, Card(4 * GIB))


def test_on_a_cpu_the_unquantised_base_is_chosen_where_ram_holds_it(demo_assets):
    from studio.core.config.presets import cpu_demo_config

    config = cpu_demo_config(demo_assets.model_dir, demo_assets.dataset_path)
    shape = ModelShape.from_config(json.loads((demo_assets.model_dir / "config.json").read_text()), "demo")
    plan = plan_fit(shape, config, Card(8 * GIB, device="cpu"), data=_lengths(200, 80))
    _check(plan)
    assert plan.config.quantization.mode == "none" and not plan.config.training.activation_offloading
    assert any(r.startswith("16-bit base weights instead of 4-bit: on a CPU bitsandbytes") for r in plan.reasons)
    assert not any("offloading" in r for r in plan.reasons), "no offloading line on a CPU"
    # Too little RAM for the unquantised 8B model: its 4-bit base stays.
    big = plan_fit(SHAPES["llama-3.1-8b"], _preset_config(), Card(16 * GIB, device="cpu"), data=_lengths(512, 256))
    _check(big)
    assert big.config.quantization.mode == "4bit"
    assert any(r.startswith("4bit base weights kept") for r in big.reasons)


# ------------------------------------------------------------------ the GPU benchmark's dry run


def test_the_fit_benchmark_dry_run_lists_every_probe_on_the_cpu(tmp_path):
    output = tmp_path / "fit.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fit_gpu.py"), "--dry-run", "--output",
                             str(output)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(output.read_text())
    assert report["dry_run"] is True and report["figures"] == "to be taken on a lent GPU"
    cases = {(case["kind"], case["model"], case["path"]) for case in report["cases"]}
    for model in ("llama-3.1-8b", "llama-3.2-3b"):
        assert ("longest-context", model, "studio") in cases and ("longest-context", model, "plain") in cases
    assert ("speed", "llama-3.2-3b", "studio") in cases and ("speed", "llama-3.2-3b", "plain") in cases
    assert {case["offloading"] for case in report["cases"] if case["kind"] == "peak"} == {False, True}
    assert report["planned_seconds"] <= 8 * 60
    assert "figures to be taken on a lent GPU" in result.stdout


# ------------------------------------------------------------------ presets use the planner


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.key)
def test_a_gpu_preset_gets_the_planners_levers_for_its_card_and_model(preset):
    from studio.core.sessions.config import fit_preset

    config = RunConfig()
    config.model.name_or_path, config.data.train_file = "m", "train.jsonl"
    shape = SHAPES["llama-3.1-8b" if "8B" in preset.suggested_model else "llama-3.2-3b"]
    fitted = fit_preset(preset, config, shape)
    plain = preset.apply(config)
    assert fit_preset(preset, config, None) == plain, "no shape: the preset as it is"
    t, p = fitted.training, plain.training
    assert t.max_length == p.max_length and fitted.lora == plain.lora, "only the memory levers change"
    effective = p.per_device_train_batch_size * p.gradient_accumulation_steps
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == effective
    assert estimate_vram(shape, fitted).total <= 0.9 * preset.vram_bytes
