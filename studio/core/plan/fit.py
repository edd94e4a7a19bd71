"""Fit to this card: the fastest settings of a run that fit a GPU's free memory (or a CPU's RAM), and why.

A pure planner over the estimate of `studio.core.plan.vram` (measured within ±10% of real peaks, so it
can choose, not only warn). From the model's shape, the data's token lengths (what the Dataset tab
measures), the memory free and the user's effective batch it picks, fastest first:

1. a `max_length` that covers the data: its longest example, else its 99th percentile (saying how many
   rows that truncates), else the length the config already has when no lengths are known;
2. on a CPU, the unquantised base where RAM holds it: bitsandbytes dequantises each 4-bit weight on every
   CPU matmul, which dominates a small model's step (docs/BENCHMARKS.md has the measured steps/s);
3. gradient checkpointing off where every layer's activations fit: recomputing the forward pass costs
   about a third more compute per step (2 of the ~6 FLOPs per weight and token); else checkpointing on as few
   layers as fit (transformers' `every_n_layers`, SFT only: `vram.checkpointing_every_n_layers`), since the
   recompute costs in proportion to the layers checkpointed; else on every layer;
4. the largest micro-batch that divides the effective batch (fewer, fuller steps), the rest accumulated;
5. activation offloading only where nothing fits without it (its copies cost time);
6. where the length still does not fit, the levers that go for length: the frozen input embedding kept in CPU
   RAM (a copy to the card per forward pass; 4/8-bit base, untied, on a GPU), then LoRA dropout 0 — each adapted
   layer keeps its own dropped-out copy of its input for the backward pass, most of what a recomputed layer
   holds; this one changes training, and the reasons say so.

A candidate fits when its estimate is at most `FITS_BELOW` (90%) of the free memory: the estimate's own
error is the margin. Where nothing fits it says what would: a shorter `max_length` (with the rows it
truncates), the 4-bit base, a smaller model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from studio.core.config.settings import RunConfig, config_field, copy_config
from studio.core.methods.registry import method_of
from studio.core.plan.vram import (
    FITS_BELOW, ModelShape, VramEstimate, checkpointed_layer_count, embedding_can_stay_on_cpu, embedding_on_cpu_saving,
    estimate_vram,
)
from studio.core.system.units import format_bytes

__all__ = ["Card", "DataLengths", "FitPlan", "context_line", "cpu_estimate", "fits", "longest_context", "plan_fit"]

PERCENTILE = 99
MIN_LENGTH = int(config_field("training", "max_length").metadata["min"])
MAX_LENGTH = int(config_field("training", "max_length").metadata["max"])
FIT_FIELDS = (("quantization", "mode"), ("training", "max_length"), ("training", "per_device_train_batch_size"),
              ("training", "gradient_accumulation_steps"), ("training", "gradient_checkpointing"),
              ("training", "activation_offloading"), ("training", "checkpointing_every_n_layers"),
              ("training", "embedding_on_cpu"), ("lora", "lora_dropout"))
"""The settings the planner may change; every other knob stays the user's."""


@dataclass(frozen=True)
class Card:
    """Where the run trains: a CUDA GPU's free memory, or (`device` "cpu") the RAM a CPU run may use."""

    free_bytes: int
    device: str = "cuda"
    name: str = ""

    @property
    def usable_bytes(self) -> int:
        return int(self.free_bytes * FITS_BELOW)

    def describe(self) -> str:
        what = "RAM available" if self.device == "cpu" else "free"
        return f"{format_bytes(self.free_bytes, style='memory')} {what}" + (f" on {self.name}" if self.name else "")


@dataclass(frozen=True)
class DataLengths:
    """Token lengths of the training rows (before truncation), perhaps of a sample of `total_rows`."""

    lengths: tuple[int, ...]
    total_rows: int | None = None

    @classmethod
    def from_stats(cls, stats) -> DataLengths | None:
        """From the Dataset tab's `TokenStats` (None when no row is measured yet)."""
        if stats is None or not stats.measured:
            return None
        return cls(tuple(int(n) for n in stats.lengths), None if stats.complete else int(stats.total_rows))

    @property
    def longest(self) -> int:
        return max(self.lengths)

    def percentile(self, q: float) -> int:
        """The nearest-rank percentile: the smallest length at least q% of the rows do not exceed."""
        ordered = sorted(self.lengths)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def longer_than(self, length: int) -> int:
        """Rows longer than `length` (truncated by it), scaled to every row when only a sample was measured."""
        count = sum(1 for n in self.lengths if n > length)
        if self.total_rows and self.total_rows != len(self.lengths):
            return round(count * self.total_rows / len(self.lengths))
        return count

    @property
    def rows(self) -> int:
        return self.total_rows or len(self.lengths)


@dataclass
class FitPlan:
    """What the planner chose: `config` (a copy of the one given, with the chosen settings) and its estimate,
    or — `fits` False — the config unchanged and `suggestions` of what would fit."""

    config: RunConfig
    fits: bool
    before: VramEstimate
    after: VramEstimate
    card: Card
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    truncated_rows: int = 0

    def changes(self, original: RunConfig) -> list[tuple[str, object, object]]:
        """(key, old, new) for each setting the plan changes."""
        result = []
        for section, name in FIT_FIELDS:
            old, new = getattr(getattr(original, section), name), getattr(getattr(self.config, section), name)
            if old != new:
                result.append((f"{section}.{name}", old, new))
        return result


def cpu_estimate(shape: ModelShape, config: RunConfig) -> VramEstimate:
    """The memory a CPU run needs: the GPU estimate in float32 (what "auto" computes in on a CPU) with AdamW (the
    CPU's "auto" optimiser) and no CUDA context."""
    cpu = copy_config(config)
    if cpu.quantization.compute_dtype == "auto":
        cpu.quantization.compute_dtype = "float32"
    if cpu.training.optim == "auto" or "paged" in cpu.training.optim or "8bit" in cpu.training.optim:
        cpu.training.optim = "adamw_torch"  # bitsandbytes' 8-bit and paged optimisers are CUDA ones
    cpu.training.activation_offloading = False
    cpu.training.embedding_on_cpu = False  # a CPU run has it in RAM anyway
    estimate = estimate_vram(shape, cpu)
    estimate.breakdown.pop("CUDA context", None)
    return estimate


def _estimate(shape: ModelShape, config: RunConfig, card: Card) -> VramEstimate:
    return cpu_estimate(shape, config) if card.device == "cpu" else estimate_vram(shape, config)


def fits(estimate: VramEstimate, card: Card) -> bool:
    """Within the card's free memory with the estimate's margin."""
    return 0 < estimate.total <= card.usable_bytes


def _with(config: RunConfig, lora_dropout: float | None = None, **training) -> RunConfig:
    result = copy_config(config)
    for name, value in training.items():
        setattr(result.training, name, value)
    if lora_dropout is not None:
        result.lora.lora_dropout = lora_dropout
    return result


def _embedding_lever(shape: ModelShape, config: RunConfig, card: Card) -> bool:
    """Whether the planner may keep the input embedding in CPU RAM for this model and card."""
    return card.device == "cuda" and embedding_can_stay_on_cpu(config, tied=shape.tie_word_embeddings)


def _lean(shape: ModelShape, config: RunConfig, card: Card) -> RunConfig:
    """The least memory a run of this config can take: batch 1, every layer checkpointed, LoRA dropout 0, and on a
    GPU activation offloading and (where it can) the input embedding in CPU RAM."""
    return _with(config, lora_dropout=0.0, per_device_train_batch_size=1, gradient_checkpointing=True,
                 checkpointing_every_n_layers=1, activation_offloading=card.device == "cuda",
                 embedding_on_cpu=_embedding_lever(shape, config, card))


def _lean_levers(shape: ModelShape, config: RunConfig, card: Card) -> str:
    """The levers `_lean` pulls, in words."""
    levers = ["batch 1", "gradient checkpointing"]
    if card.device == "cuda":
        levers.append("activation offloading")
    if _embedding_lever(shape, config, card):
        levers.append("the input embedding in CPU RAM")
    if config.lora.lora_dropout > 0:
        levers.append("LoRA dropout 0")
    return ", ".join(levers)


def longest_context(shape: ModelShape, config: RunConfig, card: Card) -> int:
    """The longest `max_length` that fits the card with the leanest settings (0 when not even the shortest does)."""
    lean = _lean(shape, config, card)

    def ok(length: int) -> bool:
        return fits(_estimate(shape, _with(lean, max_length=length), card), card)

    if not ok(MIN_LENGTH):
        return 0
    low, high = MIN_LENGTH, MIN_LENGTH
    while high < MAX_LENGTH and ok(high):
        low, high = high, min(MAX_LENGTH, high * 2)
    if ok(high):
        return high
    while high - low > 1:  # low fits, high does not
        middle = (low + high) // 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low


def _divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _length_targets(config: RunConfig, data: DataLengths | None) -> list[tuple[int, str, int]]:
    """(max_length, why, rows truncated) to try, the one covering the most data first."""
    if data is None or not data.lengths:
        return [(config.training.max_length, f"max_length {config.training.max_length:,} kept: no token lengths are "
                 "measured yet (the Dataset tab's Token lengths)", 0)]
    longest = max(MIN_LENGTH, min(MAX_LENGTH, data.longest))
    targets = [(longest, f"max_length {longest:,} covers the longest example ({data.longest:,} tokens): nothing "
                "is truncated", 0)]
    p = max(MIN_LENGTH, data.percentile(PERCENTILE))
    if p < longest:
        cut = data.longer_than(p)
        targets.append((p, f"max_length {p:,} covers {PERCENTILE}% of the examples: {cut:,} of {data.rows:,} rows "
                        f"are longer and will be truncated (the longest, {data.longest:,} tokens, does not fit)",
                        cut))
    return targets


def _modes(shape: ModelShape, config: RunConfig, card: Card) -> list[tuple[bool, int, bool]]:
    """(gradient checkpointing, every how many layers, activation offloading), fastest first: none; then (SFT)
    as few checkpointed layers as possible, each count of layers once with the largest `every_n_layers` giving it;
    then every layer; then every layer with offloading."""
    modes = [(False, 1, False)]
    # vram.checkpointing_every_n_layers: a method whose TRL trainer checkpoints every layer has that mode only
    if not method_of(config).checkpoints_every_layer:
        layers, counts = shape.num_hidden_layers, set()
        for every_n in range(layers, 1, -1):
            count = checkpointed_layer_count(layers, every_n)
            if count < layers and count not in counts:
                counts.add(count)
                modes.append((True, every_n, False))
    modes.append((True, 1, False))
    if card.device == "cuda":
        modes.append((True, 1, True))
    return modes


def _length_levers(shape: ModelShape, config: RunConfig, card: Card) -> list[tuple[float, bool]]:
    """(LoRA dropout, input embedding in CPU RAM), tried in this order once no mode fits: the config's own first,
    then the embedding in CPU RAM (it costs a copy per forward pass, training is unchanged), then dropout 0 (it
    changes training)."""
    dropout, embedding = config.lora.lora_dropout, _embedding_lever(shape, config, card)
    levers = [(dropout, False)] + ([(dropout, True)] if embedding else [])
    if dropout > 0:
        levers += [(0.0, False)] + ([(0.0, True)] if embedding else [])
    return levers


def _quantizations(config: RunConfig, card: Card) -> list[str]:
    if card.device == "cpu" and config.quantization.mode != "none":
        return ["none", config.quantization.mode]
    return [config.quantization.mode]


def plan_fit(shape: ModelShape, config: RunConfig, card: Card, *, data: DataLengths | None = None,
             effective_batch: int | None = None, alternatives: Mapping[str, ModelShape] | None = None) -> FitPlan:
    """The fastest settings of `config` that fit `card`, with the reasons; see the module docstring."""
    t = config.training
    effective = effective_batch or t.per_device_train_batch_size * t.gradient_accumulation_steps
    before = _estimate(shape, config, card)
    modes = _modes(shape, config, card)
    for length, length_reason, truncated in _length_targets(config, data):
        for mode in _quantizations(config, card):
            for dropout, embedding_on_cpu in _length_levers(shape, config, card):
                for checkpointing, every_n, offloading in modes:
                    for micro in _divisors_descending(effective):
                        candidate = _with(config, lora_dropout=dropout, max_length=length,
                                          per_device_train_batch_size=micro,
                                          gradient_accumulation_steps=effective // micro,
                                          gradient_checkpointing=checkpointing, checkpointing_every_n_layers=every_n,
                                          activation_offloading=offloading, embedding_on_cpu=embedding_on_cpu)
                        candidate.quantization.mode = mode
                        estimate = _estimate(shape, candidate, card)
                        if fits(estimate, card):
                            plan = FitPlan(candidate, True, before, estimate, card, truncated_rows=truncated)
                            plan.reasons = _reasons(shape, config, plan, length_reason, effective)
                            return plan
    shortest = _with(_lean(shape, config, card), max_length=length)  # the last, shortest length tried
    plan = FitPlan(copy_config(config), False, before, before, card)
    plan.suggestions = _suggestions(shape, config, card, data, alternatives or {})
    lean = _lean_levers(shape, config, card)
    plan.reasons = [f"Nothing fits {card.describe()} at max_length {length:,}, even with {lean}: the estimate needs "
                    f"{format_bytes(_estimate(shape, shortest, card).total, style='estimate')}, "
                    f"{format_bytes(card.usable_bytes, style='estimate')} usable with the margin."]
    return plan


def _reasons(shape: ModelShape, original: RunConfig, plan: FitPlan, length_reason: str, effective: int) -> list[str]:
    chosen, card = plan.config, plan.card
    t = chosen.training
    usable = format_bytes(card.usable_bytes, style="estimate")
    reasons = [length_reason + "."]

    def need(**changes) -> str:
        variant = _with(chosen, **changes)
        return format_bytes(_estimate(shape, variant, card).total, style="estimate")

    layers = shape.num_hidden_layers
    checkpointed = checkpointed_layer_count(layers, t.checkpointing_every_n_layers)

    if card.device == "cpu" and original.quantization.mode != "none":
        if chosen.quantization.mode == "none":
            reasons.append("16-bit base weights instead of 4-bit: on a CPU bitsandbytes dequantises every weight at "
                           "every matmul, which dominates a small model's step, and the unquantised model fits in "
                           f"RAM ({format_bytes(plan.after.total, style='estimate')} of {usable} usable).")
        else:
            reasons.append(f"{original.quantization.mode} base weights kept: the unquantised model would not fit in "
                           "RAM.")
    if not t.gradient_checkpointing:
        reasons.append(f"Gradient checkpointing off: every layer's activations fit ({need()} in all), and not "
                       "recomputing them saves about a third of each step's compute.")
    elif checkpointed < layers:
        without = need(gradient_checkpointing=False, activation_offloading=False, per_device_train_batch_size=1)
        reasons.append(f"Gradient checkpointing on {checkpointed} of {layers} layers (every "
                       f"{t.checkpointing_every_n_layers}: transformers' every_n_layers): without it the run would "
                       f"need {without} at batch 1; the other layers keep their activations, so the backward pass "
                       f"recomputes {checkpointed} layers instead of {layers}.")
    else:
        without = need(gradient_checkpointing=False, activation_offloading=False, per_device_train_batch_size=1)
        reasons.append(f"Gradient checkpointing on: without it the run would need {without} at batch 1, more than "
                       f"the {usable} usable.")
    if t.activation_offloading:
        reasons.append(f"Activation offloading on: with checkpointing alone the run would need "
                       f"{need(activation_offloading=False, per_device_train_batch_size=1)} at batch 1; the layer "
                       f"inputs wait in pinned CPU RAM instead "
                       f"({format_bytes(plan.after.settings.get('offloaded_bytes', 0), style='estimate')}).")
    elif card.device == "cuda":
        reasons.append("Activation offloading off: not needed, and its copies to the CPU would cost time.")
    if t.embedding_on_cpu:
        size = format_bytes(embedding_on_cpu_saving(shape, chosen), style="estimate")
        reasons.append(f"Input embedding in CPU RAM ({size}): with it on the card the run would need "
                       f"{need(embedding_on_cpu=False)}. accelerate copies it to the card for each forward pass's "
                       "lookup (bitsandbytes' llm_int8_enable_fp32_cpu_offload lets a 4-bit model keep it on the "
                       "CPU); the frozen lookup saves nothing for the backward pass. Its saving is an estimate until "
                       "measured on a GPU.")
    if chosen.lora.lora_dropout != original.lora.lora_dropout:
        reasons.append(f"LoRA dropout {original.lora.lora_dropout:g} → 0 to fit this length — this changes "
                       "training (no dropout on the adapter's input): with dropout each adapted layer keeps its own "
                       "dropped-out copy of its input for the backward pass, and the run would need "
                       f"{need(lora_dropout=original.lora.lora_dropout)}.")
    micro, accumulation = t.per_device_train_batch_size, t.gradient_accumulation_steps
    if micro == effective:
        reasons.append(f"Micro-batch {micro} with no accumulation: the whole effective batch of {effective} fits in "
                       "one pass.")
    else:
        # The next larger micro-batch that divides the effective batch did not fit (the planner tried it first).
        larger = min(d for d in _divisors_descending(effective) if d > micro)
        reasons.append(f"Micro-batch {micro} × {accumulation} accumulation steps = the effective batch of "
                       f"{effective}: a micro-batch of {larger} would need "
                       f"{need(per_device_train_batch_size=larger, gradient_accumulation_steps=effective // larger)}.")
    reasons.append(f"Estimate {format_bytes(plan.after.total, style='estimate')} of {card.describe()}: at most "
                   f"{round(FITS_BELOW * 100)}% of it, which leaves room for the estimate's ±10%.")
    return reasons


def _suggestions(shape: ModelShape, config: RunConfig, card: Card, data: DataLengths | None,
                 alternatives: Mapping[str, ModelShape]) -> list[str]:
    suggestions = []
    longest = longest_context(shape, config, card)
    if longest:
        cut = f" (truncates {data.longer_than(longest):,} of {data.rows:,} rows)" if data and data.lengths else ""
        suggestions.append(f"A max_length of {longest:,} tokens fits{cut}, with {_lean_levers(shape, config, card)}.")
    else:
        fixed = _estimate(shape, _with(_lean(shape, config, card), max_length=MIN_LENGTH), card)
        suggestions.append(f"Not even {MIN_LENGTH} tokens fit: the weights, adapter and context alone need "
                           f"{format_bytes(fixed.total, style='estimate')}, more than the "
                           f"{format_bytes(card.usable_bytes, style='estimate')} usable.")
    if card.device == "cuda" and config.quantization.mode != "4bit":
        four_bit = copy_config(config)
        four_bit.quantization.mode = "4bit"
        if (at := longest_context(shape, four_bit, card)) > longest:
            suggestions.append(f"With the base in 4-bit (QLoRA) a max_length of {at:,} tokens fits.")
    wanted = max(MIN_LENGTH, data.longest if data and data.lengths else config.training.max_length)
    for name, other in sorted(alternatives.items(), key=lambda item: item[1].parameter_count):
        if other.parameter_count >= shape.parameter_count:
            continue
        at = longest_context(other, config, card)
        if at >= wanted:
            suggestions.append(f"A smaller model: {name} fits at {wanted:,} tokens (up to {at:,}).")
            break
        if at:
            suggestions.append(f"A smaller model: {name} fits up to {at:,} tokens.")
    return suggestions


def context_line(shape: ModelShape, config: RunConfig, card: Card) -> str:
    """"Longest context that fits on this card" for a model, in one line."""
    longest = longest_context(shape, config, card)
    levers = _lean_levers(shape, config, card)
    if not longest:
        return f"Longest context that fits {card.describe()}: none — the model alone does not fit."
    return f"Longest context that fits {card.describe()}: {longest:,} tokens ({levers})."

