"""Fit to the card: the memory levers' estimate terms by hand, the levers reaching TRL (and what TRL really runs:
its offloading hooks and its chunked loss with PEFT), and the planner's choices on known shapes and cards."""

from __future__ import annotations

import json

import pytest

from studio.core.config.presets import GPU_PRESETS
from studio.core.config.settings import RunConfig
from studio.core.models.source import bundled_shapes
from studio.core.plan.fit import (
    Card, DataLengths, FitPlan, context_line, cpu_estimate, fits, longest_context, plan_fit,
)
from studio.core.plan.speedups import Capabilities, plan_fast_path
from studio.core.plan.vram import (
    GIB, OFFLOAD_STASH_TENSORS, ModelShape, embedding_on_cpu_saving, estimate_vram, layer_activation_bytes_per_token,
    resolve_target_modules,
)
from planner_shared import (  # noqa: F401  (shared with the other half)
    MEASURED_TOKENS, TOY, _activation_term, _saved_bytes, _toy_config, _toy_peft_model, _within,
)
H, I, L = 64, 128, 8


def _shape(name: str) -> ModelShape:
    return ModelShape.from_config(json.loads(bundled_shapes()[name].read_text()), name)


SHAPES = {name: _shape(name) for name in bundled_shapes()}




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


# ------------------------------------------------------------------ the planner


def _preset_config(key: str = "8gb") -> RunConfig:
    return next(p for p in GPU_PRESETS if p.key == key).build("m", "train.jsonl")


def _lengths(longest: int, typical: int, rows: int = 200) -> DataLengths:
    return DataLengths(tuple([typical] * (rows - 1) + [longest]))


def _check(plan: FitPlan) -> None:
    """Whatever it chose fits with the margin, and it says why."""
    assert plan.fits and plan.after.total <= 0.9 * plan.card.free_bytes, plan.after.format_table()
    assert plan.reasons and plan.reasons[-1].startswith("Estimate")


@pytest.mark.parametrize(("gb", "checkpointing", "every_n", "offloading", "micro"), [
    (8, True, 1, True, 1),      # the 8B shape at 2,000 tokens only fits an 8 GB card with its layer inputs offloaded
    (12, True, 1, False, 2),    # 12 GB: checkpointing alone, two rows per pass
    (16, True, 1, False, 4),
    (24, True, 15, False, 1),   # 24 GB: 3 of 32 layers checkpointed (a tenth of the recompute) beats batch 8
])
def test_the_8b_shape_on_each_card(gb, checkpointing, every_n, offloading, micro):
    config = _preset_config()
    plan = plan_fit(SHAPES["llama-3.1-8b"], config, Card(gb * GIB), data=_lengths(2000, 600))
    _check(plan)
    t = plan.config.training
    assert (t.gradient_checkpointing, t.checkpointing_every_n_layers, t.activation_offloading,
            t.per_device_train_batch_size) == (checkpointing, every_n, offloading, micro)
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 8, "the effective batch is kept"
    assert t.max_length == 2000 and plan.truncated_rows == 0
    assert "covers the longest example (2,000 tokens)" in plan.reasons[0]
    assert not t.embedding_on_cpu and plan.config.lora == config.lora, "the length fits without those levers"
    if offloading:
        assert any(r.startswith("Activation offloading on") for r in plan.reasons)
    else:
        assert any(r.startswith("Activation offloading off: not needed") for r in plan.reasons)
    if every_n > 1:
        assert any(r.startswith("Gradient checkpointing on 3 of 32 layers (every 15: transformers' every_n_layers)")
                   for r in plan.reasons)


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
    # 2 of 200 rows are 40,000 tokens long: too long for the 8B shape on 12 GB; the 99th percentile, 1,500, fits.
    data = DataLengths(tuple([1500] * 198 + [40_000] * 2))
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
    assert plan.reasons[0].startswith("Nothing fits 8.0 GiB free at max_length 12,000, even with batch 1, gradient "
                                      "checkpointing, activation offloading, the input embedding in CPU RAM, LoRA "
                                      "dropout 0: the estimate needs")
    longest = longest_context(SHAPES["llama-3.1-8b"], config, Card(8 * GIB))
    assert 1000 < longest < 12_000
    assert plan.suggestions[0] == (f"A max_length of {longest:,} tokens fits (truncates 200 of 200 rows), with "
                                   "batch 1, gradient checkpointing, activation offloading, the input embedding in "
                                   "CPU RAM, LoRA dropout 0.")
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
                                                 "(batch 1, gradient checkpointing, activation offloading, the input "
                                                 "embedding in CPU RAM, LoRA dropout 0).")
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


# ------------------------------------------------------------------ the next memory levers, measured on the CPU
#
# What autograd keeps for the backward pass is counted with torch.autograd.graph.saved_tensors_hooks on a random toy
# Llama (the TOY shape) in bfloat16 with a LoRA adapter on every linear layer cast to bfloat16 (what TRL does to a
# quantised model's adapter), so the frozen base layers save no input as bitsandbytes' do. Each distinct storage is
# counted once, parameters not at all. The hooks see the inputs non-reentrant checkpointing keeps, too. Each lever's
# saving is the difference of two measurements, compared with the difference of the estimate's activation term.












def test_without_checkpointing_the_measured_activations_are_the_estimates():
    """The base the levers are measured against: every layer's saved tensors and the final norm's copy."""
    measured = _saved_bytes(_toy_peft_model(0.0))
    estimated = _activation_term(gradient_checkpointing=False)
    assert _within(measured, estimated), (measured, estimated)


def test_the_input_embedding_saves_nothing_for_backward_and_its_estimate_term_is_its_size():
    """The frozen lookup keeps nothing for the backward pass (so the backward pass runs without the weights), and
    what keeping them in CPU RAM takes off the card's estimate is the module's own size."""
    import torch

    model = _toy_peft_model(0.0)
    embedding = model.get_input_embeddings()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage().nbytes()) or t,
                                                  lambda t: t):
        out = embedding(torch.randint(4, 250, (1, MEASURED_TOKENS)))
    assert out.requires_grad and saved == [], "the lookup of a frozen embedding saves no tensor"
    shape = ModelShape.from_config({**TOY, "tie_word_embeddings": False}, "toy")
    on_card = estimate_vram(shape, _toy_config()).breakdown
    in_ram = estimate_vram(shape, _toy_config(embedding_on_cpu=True)).breakdown
    assert on_card["embeddings, 16-bit"] == embedding.weight.nbytes == H * 256 * 2
    # The toy's activations outgrow the weights it copies in for the lookup: it adds nothing to the peak.
    assert in_ram["embeddings, 16-bit, in CPU RAM (on the card for the lookup)"] == 0
    assert embedding_on_cpu_saving(shape, _toy_config()) == embedding.weight.nbytes


# ------------------------------------------------------------------ the levers reach the trainer and the load


def test_every_n_layers_reaches_the_trainer_for_sft_only(tmp_path):
    from studio.core.plan.vram import checkpointing_every_n_layers
    from studio.core.train.factories import Hardware, sft_config, training_arguments

    config = RunConfig()
    config.training.checkpointing_every_n_layers = 4
    cpu = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    args = sft_config(config, cpu, tmp_path, has_eval=False)
    assert args.activation_checkpointing is True
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False, "every_n_layers": 4}
    config.training.method = "dpo"  # TRL re-enables checkpointing on every layer around its reference pass
    assert checkpointing_every_n_layers(config) == 1
    assert training_arguments(config, cpu, tmp_path, has_eval=False)["activation_checkpointing_kwargs"] == {
        "use_reentrant": False}
    lines = {s.name: s for s in plan_fast_path(config, Capabilities(device="cuda", compute_capability=(8, 9)),
                                               compute_dtype="bfloat16").speedups}
    assert not lines["partial checkpointing"].enabled and "for SFT" in lines["partial checkpointing"].note
    config.training.method = "sft"
    lines = {s.name: s for s in plan_fast_path(config, Capabilities(device="cpu"), compute_dtype="float32").speedups}
    assert lines["partial checkpointing"].enabled and "every 4 layers" in lines["partial checkpointing"].note


def test_the_input_embedding_goes_to_the_cpu_with_bitsandbytes_switch_on_a_gpu_only():
    """The load's placement: the embedding on "cpu" and every other top-level module of the Llama layout on the GPU,
    with bitsandbytes' switch for CPU modules, which transformers' 4-bit quantiser requires for such a map (its
    check runs here on the CPU). Its saving is measured on a GPU (benchmarks/fit_gpu.py)."""
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    from studio.core.train.factories import Hardware, device_map, quantization_config

    config = RunConfig()
    config.training.embedding_on_cpu = True
    gpu = Hardware(device="cuda", compute_dtype="bfloat16", optim="paged_adamw_8bit")
    placed = device_map(config, gpu, tied_embeddings=False)
    assert placed == {"model.embed_tokens": "cpu", "model.layers": "cuda:0", "model.norm": "cuda:0",
                      "model.rotary_emb": "cuda:0", "lm_head": "cuda:0"}
    assert device_map(config, gpu, tied_embeddings=False, local_rank=1)["model.layers"] == "cuda:1"
    switched = quantization_config(config, gpu, embedding_on_cpu=True)
    assert switched.llm_int8_enable_fp32_cpu_offload is True
    Bnb4BitHfQuantizer(switched).validate_environment(device_map=placed)  # accepted
    with pytest.raises(ValueError, match="llm_int8_enable_fp32_cpu_offload"):
        Bnb4BitHfQuantizer(quantization_config(config, gpu)).validate_environment(device_map=placed)
    # Where it cannot apply, everything stays on the one device.
    assert device_map(config, gpu, tied_embeddings=True) == {"": "cuda:0"}, "tied: it is the output head"
    cpu = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    assert device_map(config, cpu, tied_embeddings=False) == {"": "cpu"}
    config.quantization.mode = "none"
    assert device_map(config, gpu, tied_embeddings=False) == {"": "cuda:0"}
    config.quantization.mode = "4bit"
    config.lora.modules_to_save = ["embed_tokens"]
    assert device_map(config, gpu, tied_embeddings=False) == {"": "cuda:0"}, "a trained embedding stays on the card"
    config.training.embedding_on_cpu = False
    config.lora.modules_to_save = []
    assert device_map(config, gpu, tied_embeddings=False) == {"": "cuda:0"}


# ------------------------------------------------------------------ the planner pulls them


def test_the_8b_shape_goes_for_length_on_8_gb_with_every_lever_and_says_dropout_changes_training():
    config = _preset_config()
    shape, card = SHAPES["llama-3.1-8b"], Card(8 * GIB)
    # 4,096 tokens: the embedding in CPU RAM is enough; training is unchanged.
    at_4k = plan_fit(shape, config, card, data=_lengths(4096, 900))
    _check(at_4k)
    assert at_4k.config.training.embedding_on_cpu and at_4k.config.lora.lora_dropout == config.lora.lora_dropout
    assert any(r.startswith("Input embedding in CPU RAM (1002 MiB)") for r in at_4k.reasons)
    assert not any("changes training" in r for r in at_4k.reasons)
    # 6,000 tokens (the target): dropout 0 too, and the reasons say it changes training.
    at_6k = plan_fit(shape, config, card, data=_lengths(6000, 900))
    _check(at_6k)
    t = at_6k.config.training
    assert (t.max_length, t.gradient_checkpointing, t.checkpointing_every_n_layers, t.activation_offloading,
            t.embedding_on_cpu, at_6k.config.lora.lora_dropout) == (6000, True, 1, True, True, 0.0)
    assert ("lora.lora_dropout", 0.05, 0.0) in at_6k.changes(config)
    assert ("training.embedding_on_cpu", False, True) in at_6k.changes(config)
    dropout = next(r for r in at_6k.reasons if r.startswith("LoRA dropout 0.05 → 0"))
    assert "this changes training" in dropout and "dropped-out copy of its input" in dropout
    assert longest_context(shape, config, card) >= 6000, "the issue's target, by the estimate (GPU figure to come)"


def test_the_3b_shape_checkpoints_only_the_layers_that_do_not_fit():
    config = _preset_config()
    plan = plan_fit(SHAPES["llama-3.2-3b"], config, Card(12 * GIB), data=_lengths(2048, 900))
    _check(plan)
    t = plan.config.training
    assert (t.gradient_checkpointing, t.checkpointing_every_n_layers, t.per_device_train_batch_size) == (True, 4, 1)
    assert ("training.checkpointing_every_n_layers", 1, 4) in plan.changes(config)
    assert any(r.startswith("Gradient checkpointing on 7 of 28 layers (every 4: transformers' every_n_layers)")
               for r in plan.reasons)
    # The next fewer layers (every 5th: 6 of 28) would not fit; every layer would recompute four times as many.
    assert not fits(estimate_vram(SHAPES["llama-3.2-3b"], _with_training(plan.config, checkpointing_every_n_layers=5)),
                    plan.card)
    # A DPO run cannot get it (TRL checkpoints every layer again): the planner checkpoints every layer.
    config.training.method = "dpo"
    dpo = plan_fit(SHAPES["llama-3.2-3b"], config, Card(12 * GIB), data=_lengths(2048, 900))
    _check(dpo)
    assert dpo.config.training.checkpointing_every_n_layers == 1


def _with_training(config: RunConfig, **training) -> RunConfig:
    from studio.core.config.settings import copy_config

    result = copy_config(config)
    for name, value in training.items():
        setattr(result.training, name, value)
    return result


@pytest.mark.parametrize(("shape", "tied"), [("llama-3.1-8b", False), ("llama-3.2-3b", True)])
def test_a_run_reads_whether_its_base_ties_the_embedding_from_the_models_config(tmp_path, shape, tied):
    """The run decides the placement from the base's own config (its class's default where config.json is silent)."""
    from studio.core.train.run import _ties_embeddings

    (tmp_path / "config.json").write_text(bundled_shapes()[shape].read_text())
    config = RunConfig()
    config.model.name_or_path = str(tmp_path)
    assert _ties_embeddings(config) is tied
