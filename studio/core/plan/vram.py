"""How much GPU memory a (Q)LoRA run will need, from the model's `config.json` alone (no weights).

The estimate models what *this* studio's training path allocates (transformers 5 + PEFT + TRL's
`SFTTrainer` + bitsandbytes), term by term, so that every line of the breakdown can be checked by
hand and calibrated against `benchmarks/vram_accuracy.py` on a real GPU:

- **base weights**: decoder linear layers in NF4/FP4 (4 bits + one absmax per 64 weights; with
  double quantisation the absmax is itself 8-bit with one fp32 constant per 256 blocks:
  4 + 8/64 + 32/(64·256) ≈ 4.127 bits, the QLoRA paper's figure), in LLM.int8 (1 byte + an fp32
  scale per output row) or in 16-bit. bitsandbytes leaves the embeddings, the output head and the
  norms in the compute dtype; tied embeddings are stored once.
- **LoRA**: r·(in + out) per adapted layer. TRL casts trainable parameters of a quantised model to
  bfloat16; PEFT keeps a 16-bit model's adapter in float32. Gradients have the parameter's dtype.
- **optimiser states**: torch AdamW keeps 2 states in the parameter's dtype; bitsandbytes' 8-bit
  AdamW keeps 2 one-byte states (+ an fp32 absmax per 256) for tensors of 4096+ elements and fp32
  states for smaller ones; the paged variants live in CUDA unified memory (they can spill to CPU
  RAM under pressure, so they count here but are the first to give).
- **activations**: what autograd saves per token per decoder layer (RMSNorm's fp32 copies, the
  attention kernel's inputs and output, the 3 MLP tensors of size `intermediate_size`, the LoRA
  branch's dropout outputs and masks — the frozen base layers save no input), times the layers, or —
  with gradient checkpointing — one layer input per layer plus one layer recomputed during the
  backward pass. With **activation offloading** (TRL's `activation_offloading`, a `saved_tensors_hooks`
  that copies every saved tensor of 1 KiB or more to CPU RAM) the card keeps only the tensors whose copy
  is in flight — at most `OFFLOAD_STASH_TENSORS` of them in the forward pass — and, in the backward
  pass, the layer being worked on: with checkpointing that many layer inputs, without it one layer's
  saved tensors plus the stash of the largest (the MLP's). With **partial checkpointing** (transformers'
  `every_n_layers`, SFT only: `checkpointing_every_n_layers`) the checkpointed layers keep their input and the
  others all they save. Each lever's term is measured with `saved_tensors_hooks` on the CPU
  (tests/core/plan/test_planner.py): no checkpointing, partial checkpointing, LoRA dropout 0 against 0.05.
- **the input embedding in CPU RAM** (`training.embedding_on_cpu`): accelerate copies it to the card for each
  forward pass's lookup; the frozen lookup saves nothing, so it counts only where it is larger than the
  activations, the workspace and the loss it never meets.
- **backward workspace**: one base layer dequantised for its matmul and the gradient in flight.
- **logits / loss**: TRL's `SFTTrainer` scores tokens with a chunked LM head that never builds the
  (tokens × vocab) logits, only one (≤4096 × 32768) tile — with PEFT too: TRL 1.16 puts the fused head
  on the PEFT model's base model (`add_fused_lm_head(model.get_base_model())`) and refuses an adapter on
  `lm_head`, and `tests/core/plan/test_planner.py` checks that a PEFT model's loss comes from it; the classic
  transformers loss (`logits=
  "full"`) holds about 12 bytes per token per vocabulary entry (bf16 logits, their fp32 copy, the
  log-softmax and its gradient), which dominates for 128k-vocabulary models such as Llama 3. The loss
  frees its buffers before the layers' backward pass starts, so it counts only where it needs more
  than the recomputed layer and the workspace.
- **CUDA context** (not seen by PyTorch's allocator) and **allocator overhead** (reserved minus
  allocated: the caching allocator's rounding and fragmentation).

The result is a :class:`VramEstimate`: an ordered breakdown (name → bytes), the total, and
:meth:`VramEstimate.verdict` against a card's free memory. Pure Python: no torch import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from studio.core.config.settings import RunConfig
from studio.core.system.units import format_bytes

GIB = 1024**3
MIB = 1024**2

NF4_BLOCK = 64
"""Weights per 4-bit quantisation block (one absmax each)."""
DOUBLE_QUANT_BLOCK = 256
"""Absmax values per second-level block when double quantisation is on."""
BITS_4BIT = 4 + 32 / NF4_BLOCK
BITS_4BIT_DOUBLE_QUANT = 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * DOUBLE_QUANT_BLOCK)  # ≈ 4.127

CUDA_CONTEXT_BYTES = 680 * MIB
"""Driver context, cuBLAS handles and the loaded kernels of torch and bitsandbytes: memory the process
holds on the card that PyTorch's allocator never sees. 682 MiB measured by benchmarks/vram_accuracy.py
on an H100 (driver 580, CUDA 13, torch 2.11, lazy module loading); consumer cards with CUDA 12 wheels
usually need less, so this errs on the safe side."""
ALLOCATOR_OVERHEAD = 0.04
"""Reserved-over-allocated fraction of the caching allocator (rounding, fragmentation): 1-7%, 3.5% on
average, over the cases measured by benchmarks/vram_accuracy.py."""

LOGITS_TILE_TOKENS = 4096
LOGITS_TILE_VOCAB = 32768
"""TRL's chunked LM head tile (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE × its chunk_size)."""
OFFLOAD_STASH_TENSORS = 5
"""Saved tensors TRL's activation offloading keeps on the card while their copies to the CPU are in flight
(`get_act_offloading_ctx_manager`'s `max_fwd_stash_size`)."""
BNB_8BIT_MIN_SIZE = 4096
"""bitsandbytes' 8-bit optimisers keep fp32 states for tensors smaller than this."""
BNB_8BIT_STATE_BLOCK = 256

FITS, TIGHT, WONT_FIT = "fits", "tight", "won't fit"
FITS_BELOW = 0.90
"""An estimate at most this fraction of the free memory fits, with room for its ±10% error."""
TIGHT_BELOW = 1.10
"""Up to this fraction it may or may not fit (the estimate's own error); above, it won't."""

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = "all-linear"


class ShapeError(ValueError):
    """A config.json that lacks what the estimate needs, or an architecture it does not cover."""


@dataclass(frozen=True)
class LinearShape:
    """One linear layer of a decoder block."""

    name: str
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


def _first(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return default


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer with the Llama layout (Llama, Mistral, Qwen2/3, Gemma, ...)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    model_type: str = "llama"
    name: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str = "") -> ModelShape:
        """Read a Hugging Face `config.json` (as a dict); raises ShapeError naming what is missing."""
        text = config.get("text_config")
        if isinstance(text, Mapping):  # vision-language wrappers keep the language model's sizes here
            merged = dict(text)
            merged.setdefault("tie_word_embeddings", config.get("tie_word_embeddings"))
            config = merged
        if any(config.get(key) for key in ("num_local_experts", "num_experts", "n_routed_experts")):
            raise ShapeError(f"{name or 'this model'}: mixture-of-experts models are not covered by the estimate yet")
        values = {
            "hidden_size": _first(config, "hidden_size", "n_embd", "d_model"),
            "num_hidden_layers": _first(config, "num_hidden_layers", "n_layer", "num_layers"),
            "num_attention_heads": _first(config, "num_attention_heads", "n_head"),
            "vocab_size": _first(config, "vocab_size"),
        }
        missing = [key for key, value in values.items() if not isinstance(value, int) or value <= 0]
        if missing:
            raise ShapeError(f"{name or 'config.json'}: missing or invalid {', '.join(missing)}")
        hidden = values["hidden_size"]
        heads = values["num_attention_heads"]
        intermediate = _first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
        kv_heads = _first(config, "num_key_value_heads", "num_kv_heads", default=heads)
        head_dim = _first(config, "head_dim", default=hidden // heads)
        model_type = str(config.get("model_type") or "llama")
        attention_bias = bool(config.get("attention_bias", model_type in ("qwen2",)))
        return cls(
            hidden_size=hidden,
            intermediate_size=int(intermediate),
            num_hidden_layers=values["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=int(kv_heads),
            head_dim=int(head_dim),
            vocab_size=values["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            model_type=model_type,
            name=name or str(config.get("_name_or_path") or model_type),
        )

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def layer_linears(self) -> tuple[LinearShape, ...]:
        """The linear layers of one decoder block, with PEFT's usual module names."""
        h, i = self.hidden_size, self.intermediate_size
        return (
            LinearShape("q_proj", h, self.q_dim),
            LinearShape("k_proj", h, self.kv_dim),
            LinearShape("v_proj", h, self.kv_dim),
            LinearShape("o_proj", self.q_dim, h),
            LinearShape("gate_proj", h, i),
            LinearShape("up_proj", h, i),
            LinearShape("down_proj", i, h),
        )

    @property
    def decoder_linear_params(self) -> int:
        return self.num_hidden_layers * sum(layer.params for layer in self.layer_linears())

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def other_params(self) -> int:
        """Norm weights and attention biases."""
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        biases = self.num_hidden_layers * (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        return norms + biases

    @property
    def parameter_count(self) -> int:
        heads = 1 if self.tie_word_embeddings else 2
        return self.decoder_linear_params + heads * self.embedding_params + self.other_params


@dataclass
class VramEstimate:
    """An estimate of a training run's peak GPU memory, with the terms it is made of."""

    model: str
    breakdown: dict[str, int]
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.breakdown.values())

    def verdict(self, free_bytes: int | float) -> str:
        """`fits`, `tight` (within the estimate's own error of the limit) or `won't fit`."""
        if free_bytes <= 0:
            return WONT_FIT
        ratio = self.total / free_bytes
        if ratio <= FITS_BELOW:
            return FITS
        if ratio <= TIGHT_BELOW:
            return TIGHT
        return WONT_FIT

    def to_dict(self, free_bytes: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "settings": dict(self.settings),
            "breakdown_bytes": dict(self.breakdown),
            "total_bytes": self.total,
            "total_gib": round(self.total / GIB, 3),
            "notes": list(self.notes),
        }
        if free_bytes is not None:
            data["free_bytes"] = int(free_bytes)
            data["verdict"] = self.verdict(free_bytes)
        return data

    def format_table(self) -> str:
        """The breakdown as aligned text lines, largest share first in reading order of the model."""
        width = max(len(name) for name in [*self.breakdown, "total"])
        lines = [f"  {name:<{width}}  {format_bytes(size, style='estimate'):>10}" for name, size in self.breakdown.items()]
        lines.append(f"  {'-' * width}  {'-' * 10}")
        lines.append(f"  {'total':<{width}}  {format_bytes(self.total, style='estimate'):>10}")
        return "\n".join(lines)




def resolve_target_modules(shape: ModelShape, target_modules: list[str]) -> tuple[list[LinearShape], list[str]]:
    """The block's linear layers that get an adapter, and the requested names the shape does not know."""
    linears = shape.layer_linears()
    if ALL_LINEAR in target_modules:
        return list(linears), []
    wanted = set(target_modules)
    chosen = [layer for layer in linears if layer.name in wanted]
    unknown = sorted(wanted - {layer.name for layer in linears})
    return chosen, unknown


def _dtype_bytes(compute_dtype: str) -> int:
    # "auto" on a CUDA card means bfloat16 (or float16 on pre-Ampere cards): two bytes either way.
    return 4 if compute_dtype == "float32" else 2


def _optimizer_state_bytes(optim: str, numel: int, param_bytes: int) -> int:
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        if numel < BNB_8BIT_MIN_SIZE:
            return 2 * 4 * numel
        return 2 * numel + 2 * 4 * math.ceil(numel / BNB_8BIT_STATE_BLOCK)
    if optim == "sgd":
        return 0  # transformers' default SGD has no momentum buffer
    return 2 * param_bytes * numel  # torch AdamW: exp_avg and exp_avg_sq, like the parameter


def _optimizer_label(optim: str) -> str:
    return {
        "paged_adamw_8bit": "paged 8-bit AdamW",
        "adamw_8bit": "8-bit AdamW",
        "adamw_torch": "AdamW",
        "adamw_torch_fused": "fused AdamW",
        "sgd": "SGD",
    }.get(optim, optim)


# Which tensor feeds each adapted layer: layers sharing an input share what autograd saves of it.
_LAYER_INPUT = {"q_proj": "attention norm", "k_proj": "attention norm", "v_proj": "attention norm",
                "o_proj": "attention output", "gate_proj": "MLP norm", "up_proj": "MLP norm",
                "down_proj": "MLP product"}


def layer_activation_bytes_per_token(
    shape: ModelShape,
    *,
    dtype_bytes: int,
    adapted: list[LinearShape],
    r: int,
    lora_dropout: float,
    lora_in_fp32: bool,
    use_dora: bool,
    gqa_native: bool,
    attn_implementation: str,
    seq_len: int,
) -> float:
    """Bytes autograd keeps for one token of one decoder layer (no gradient checkpointing).

    Only what a backward pass needs is kept: the frozen base layers (bitsandbytes' 4-bit and 8-bit
    matmuls, and a 16-bit `F.linear` whose weight needs no gradient) save no input, because the input's
    gradient needs only the weight. Measured on an H100 (benchmarks/vram_accuracy.py), this model is
    within 1% of the per-token growth of the peak for the Llama-3.1-8B shape.
    """
    c = dtype_bytes
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.q_dim, shape.kv_dim
    norms = 2 * 4 * h  # two RMSNorms keep their input's fp32 copy (the variance's rsqrt is one float)
    kv_attn = kv if gqa_native else q  # repeat_kv copies k and v to every query head when a mask is used
    attention = c * (q + 2 * kv_attn + q) + 4 * shape.num_attention_heads  # the kernel's q, k, v, output; fp32 lse
    if attn_implementation == "eager":
        attention += (4 + c) * shape.num_attention_heads * seq_len  # the softmax matrix, fp32 and cast
    mlp = 3 * c * i  # gate and up outputs, silu(gate): the inputs of silu and of the product
    lora = c * r * len(adapted)  # lora_A outputs, kept by lora_B
    if lora_dropout > 0:
        # each adapted layer drops out its own copy of the input: lora_A keeps it, dropout its boolean mask
        lora += (c + 1) * sum(layer.in_features for layer in adapted)
    else:  # lora_A keeps its input, once per distinct input tensor
        inputs = {_LAYER_INPUT.get(layer.name, layer.name): layer.in_features for layer in adapted}
        # o_proj's input is the attention kernel's output, which the kernel keeps already (counted above): measured
        # with saved_tensors_hooks on the CPU (tests/core/plan/test_planner.py), it is one storage.
        inputs.pop("attention output", None)
        lora += c * sum(inputs.values())
    if lora_in_fp32:
        lora += c * sum(layer.in_features for layer in adapted)  # autocast's copy of the input for the fp32 adapter
    if use_dora:
        lora += 2 * c * sum(layer.out_features for layer in adapted)
    return norms + attention + mlp + lora


def estimate_vram(shape: ModelShape, config: RunConfig, *, logits: str = "chunked") -> VramEstimate:
    """Peak GPU memory of training `config` on a model of this shape; `logits` is "chunked" (TRL's
    SFTTrainer, the studio's path) or "full" (a loss over materialised logits)."""
    if logits not in ("chunked", "full"):
        raise ValueError(f"logits must be 'chunked' or 'full', not {logits!r}")
    q = config.quantization
    lora = config.lora
    t = config.training
    c = _dtype_bytes(q.compute_dtype)
    layers = shape.num_hidden_layers
    h, v = shape.hidden_size, shape.vocab_size
    batch, seq = t.per_device_train_batch_size, t.max_length
    tokens = batch * seq
    optim = "paged_adamw_8bit" if t.optim == "auto" else t.optim
    notes: list[str] = []
    parts: dict[str, int] = {}

    # --- frozen base weights
    linears = shape.layer_linears()
    if q.mode == "4bit":
        bits = BITS_4BIT_DOUBLE_QUANT if q.bnb_4bit_use_double_quant else BITS_4BIT
        label = f"base weights, {q.bnb_4bit_quant_type.upper()} 4-bit" + (" + double quant" if q.bnb_4bit_use_double_quant else "")
        parts[label] = round(shape.decoder_linear_params * bits / 8)
    elif q.mode == "8bit":
        scales = layers * sum(layer.out_features for layer in linears) * 4
        parts["base weights, 8-bit"] = shape.decoder_linear_params + scales
    else:
        parts[f"base weights, {8 * c}-bit"] = shape.decoder_linear_params * c
    embedding_on_cpu = t.embedding_on_cpu and embedding_can_stay_on_cpu(config, tied=shape.tie_word_embeddings)
    embedding_label = f"embeddings, {8 * c}-bit" + (", in CPU RAM (on the card for the lookup)"
                                                    if embedding_on_cpu else "")
    if shape.tie_word_embeddings:
        parts[f"embeddings = lm_head (tied), {8 * c}-bit"] = shape.embedding_params * c
    else:
        parts[embedding_label] = shape.embedding_params * c
        parts[f"lm_head, {8 * c}-bit"] = shape.embedding_params * c
    parts["norms and biases"] = shape.other_params * c

    # --- the adapter: weights, gradients, optimiser states
    adapted, unknown = resolve_target_modules(shape, lora.target_modules)
    if unknown:
        notes.append(f"target modules not in a {shape.model_type} block, counted as none: {', '.join(unknown)}")
    if not adapted:
        notes.append("no adapted layer found: the adapter is counted as empty")
    adapter_bytes = 2 if q.mode != "none" else 4  # TRL casts a quantised model's adapter to bf16; PEFT keeps fp32
    tensors: list[tuple[int, int]] = []  # (numel, bytes per element)
    for layer in adapted:
        tensors += [(lora.r * layer.in_features, adapter_bytes), (lora.r * layer.out_features, adapter_bytes)]
        if lora.use_dora:
            tensors.append((layer.out_features, 4))  # the magnitude vector stays fp32
    tensors = tensors * layers
    lora_params = sum(n for n, _ in tensors)
    parts["LoRA weights"] = sum(n * b for n, b in tensors)
    parts["LoRA gradients"] = sum(n * b for n, b in tensors)
    state_label = f"optimizer states, {_optimizer_label(optim)}"
    parts[state_label] = sum(_optimizer_state_bytes(optim, n, b) for n, b in tensors)
    if optim.startswith("paged_"):
        notes.append("paged optimizer states live in CUDA unified memory and can spill to CPU RAM under pressure")

    saved = 0
    for module in lora.modules_to_save:
        numel = {"lm_head": shape.embedding_params, "embed_tokens": shape.embedding_params}.get(module)
        if numel is None and module in ("norm", "model.norm"):
            numel = h
        if numel is None:
            notes.append(f"modules_to_save entry {module!r} has no known size; not counted")
            continue
        saved += numel * 2 * 2 + _optimizer_state_bytes(optim, numel, 2)  # trainable copy + grads + states
    if saved:
        parts["modules_to_save: copy, gradients, states"] = saved

    # --- activations
    gqa_native = attn_implementation_is_flash(config.model.attn_implementation) or batch == 1 or t.packing
    per_token_layer = layer_activation_bytes_per_token(
        shape, dtype_bytes=c, adapted=adapted, r=lora.r, lora_dropout=lora.lora_dropout,
        lora_in_fp32=q.mode == "none", use_dora=lora.use_dora, gqa_native=gqa_native,
        attn_implementation=config.model.attn_implementation, seq_len=seq,
    )
    final_norm = 4 * h  # the final RMSNorm's fp32 copy of its input
    offloaded = 0
    every_n = checkpointing_every_n_layers(config)
    checkpointed = checkpointed_layer_count(layers, every_n) if t.gradient_checkpointing else 0
    if t.gradient_checkpointing and checkpointed < layers:
        # Partial checkpointing: the checkpointed layers keep their input, the others all they save; the backward
        # pass recomputes one checkpointed layer at a time.
        kept = checkpointed * c * h + (layers - checkpointed) * per_token_layer
        recomputed = tokens * per_token_layer
        if t.activation_offloading:  # as without checkpointing: one layer brought back, the stash in flight
            held = tokens * (per_token_layer + OFFLOAD_STASH_TENSORS * c * shape.intermediate_size + final_norm)
            offloaded = round(tokens * kept)
            activation_label = f"activations, checkpointing {checkpointed} of {layers} layers + offloading"
        else:
            held = tokens * (kept + final_norm)
            activation_label = f"activations, checkpointing {checkpointed} of {layers} layers"
    elif t.activation_offloading and t.gradient_checkpointing:
        # The layer inputs go to CPU RAM; the card keeps those whose copy is in flight (forward) or that the
        # backward pass has brought back, and recomputes one layer at a time as without offloading.
        held = tokens * (min(layers, OFFLOAD_STASH_TENSORS) * c * h + final_norm)
        recomputed = tokens * per_token_layer
        offloaded = tokens * layers * c * h
        activation_label = "activations, checkpointing + offloading"
    elif t.activation_offloading:
        # Every saved tensor goes to CPU RAM; the backward pass brings back one layer's at a time while the
        # stash holds the last copies in flight (the MLP's tensors are the largest).
        held = tokens * (per_token_layer + OFFLOAD_STASH_TENSORS * c * shape.intermediate_size + final_norm)
        recomputed = 0
        offloaded = tokens * layers * per_token_layer
        activation_label = "activations, offloading"
    elif t.gradient_checkpointing:
        # Each layer keeps only its input; the backward pass recomputes one layer at a time.
        held = tokens * (layers * c * h + final_norm)
        recomputed = tokens * per_token_layer
        activation_label = "activations, gradient checkpointing"
    else:
        held = tokens * (layers * per_token_layer + final_norm)
        recomputed = 0
        activation_label = "activations, no checkpointing"
    if not gqa_native:
        held += batch * seq * seq  # the boolean (batch, 1, seq, seq) padding mask, shared by the layers
    parts[activation_label] = round(held + recomputed)

    # --- transient buffers of the layers' backward pass
    workspace = tokens * 2 * c * h  # the gradient flowing back through the residual stream and its branch
    if q.mode != "none":
        workspace += max(layer.params for layer in linears) * c  # one layer dequantised for its matmul
    if lora.use_dora:
        workspace += 2 * max(layer.params for layer in linears) * c  # W + scale·BA rebuilt for the norm
    parts["backward workspace"] = workspace

    # --- the loss. It runs, and frees its buffers, before the layers' backward pass starts, so its
    # buffers and the layers' backward buffers (a recomputed layer, the workspace) are never held
    # together: the peak has the larger of the two, and the loss counts only where it is the larger.
    if logits == "chunked":
        loss_peak = min(tokens, LOGITS_TILE_TOKENS) * min(v, LOGITS_TILE_VOCAB) * c + tokens * (
            c * h + 4 * h + c * h + 7 * 4)
        loss_label = "logits, chunked LM head"
    else:
        loss_peak = tokens * v * 12
        loss_label = "logits, fp32 loss over the vocabulary"
    parts[loss_label] = max(0, loss_peak - recomputed - workspace)
    if not parts[loss_label]:
        notes.append("the loss over the logits runs before the layers' backward pass and fits in the memory "
                     "that pass needs, so it adds nothing to the peak")

    # --- GRPO's generation: the batch's replies are sampled with the same loaded model, without gradients, before
    # the step's forward and backward passes; its KV cache (prompt up to max_length plus the reply) is freed before
    # the activations are made, so it counts only where it is larger than them.
    if t.method == "grpo":
        kv_cache = batch * (seq + t.max_completion_length) * layers * 2 * shape.kv_dim * c
        parts["GRPO generation, KV cache"] = max(0, kv_cache - parts[activation_label] - workspace)
        if not parts["GRPO generation, KV cache"]:
            notes.append(f"GRPO's generation (a {format_bytes(kv_cache, style='estimate')} KV cache) runs before "
                         "the training pass and fits in the memory its activations need")

    if embedding_on_cpu:
        # accelerate's CPU offload copies the weights in for the forward pass's lookup and drops them after it;
        # the frozen lookup saves nothing for the backward pass, so they are never on the card with the activations,
        # the workspace or the loss: they count only where they are larger than those.
        transient = parts[activation_label] + workspace + parts[loss_label]
        parts[embedding_label] = max(0, shape.embedding_params * c - transient)
        notes.append(f"the input embedding ({format_bytes(shape.embedding_params * c, style='estimate')}) stays in "
                     "CPU RAM and is copied to the card for each forward pass's lookup")
    allocated = sum(size for name, size in parts.items() if name != state_label or not optim.startswith("paged_"))
    parts["allocator overhead"] = round(allocated * ALLOCATOR_OVERHEAD)
    parts["CUDA context"] = CUDA_CONTEXT_BYTES

    if offloaded:
        notes.append(f"activation offloading keeps {format_bytes(offloaded, style='estimate')} of activations in "
                     "pinned CPU RAM")
    settings = {
        "quantization": q.mode if q.mode != "4bit" else f"4bit-{q.bnb_4bit_quant_type}"
        + ("-double-quant" if q.bnb_4bit_use_double_quant else ""),
        "compute_dtype": "float32" if c == 4 else "bfloat16/float16",
        "r": lora.r,
        "target_modules": [layer.name for layer in adapted],
        "lora_parameters": lora_params,
        "max_length": seq,
        "per_device_train_batch_size": batch,
        "gradient_checkpointing": t.gradient_checkpointing,
        "checkpointed_layers": checkpointed,
        "activation_offloading": t.activation_offloading,
        "embedding_on_cpu": embedding_on_cpu,
        "offloaded_bytes": offloaded,
        "optim": optim,
        "logits": logits,
        "parameters": shape.parameter_count,
    }
    if not t.packing:
        notes.append("activations are for a batch of examples at max_length (the longest a batch can be)")
    return VramEstimate(model=shape.name, breakdown=parts, notes=notes, settings=settings)


def embedding_on_cpu_saving(shape: ModelShape, config: RunConfig) -> int:
    """GPU memory the 16-bit input embedding takes, which `training.embedding_on_cpu` keeps in CPU RAM during the
    backward pass (0 when it is tied to the output head, which the chunked loss reads on the card)."""
    if not embedding_can_stay_on_cpu(config, tied=shape.tie_word_embeddings):
        return 0
    return shape.embedding_params * _dtype_bytes(config.quantization.compute_dtype)


def embedding_can_stay_on_cpu(config: RunConfig, *, tied: bool) -> bool:
    """Whether the frozen input embedding can be left in CPU RAM: a 4-bit or 8-bit base (bitsandbytes' switch for
    CPU modules, `llm_int8_enable_fp32_cpu_offload`, is the documented way to mix them; a 16-bit model would be
    moved whole to the GPU by the trainer), an embedding of its own (a tied one is the output head, which the loss
    reads on the card) and not trained (`modules_to_save`)."""
    return (config.quantization.mode in ("4bit", "8bit") and not tied
            and "embed_tokens" not in config.lora.modules_to_save)


def embedding_on_cpu_applies(config: RunConfig, *, tied: bool, device: str) -> bool:
    """Whether a run keeps its input embedding in CPU RAM: asked for, possible (`embedding_can_stay_on_cpu`), and on
    a CUDA GPU (on a CPU it is in RAM anyway). The one rule for the estimate, the load's device_map and the log."""
    return config.training.embedding_on_cpu and device == "cuda" and embedding_can_stay_on_cpu(config, tied=tied)


def checkpointing_every_n_layers(config: RunConfig) -> int:
    """Every how many decoder layers a run checkpoints (1 = every layer): the config's with SFT, 1 for the other
    methods — TRL's DPO, KTO and GRPO trainers turn checkpointing off and on again around their reference and
    generation passes with `gradient_checkpointing_enable(gradient_checkpointing_kwargs)`, which checkpoints every
    layer again. The one rule for the estimate, the trainer's arguments and the log."""
    t = config.training
    if not t.gradient_checkpointing or t.method != "sft":
        return 1
    return max(1, t.checkpointing_every_n_layers)


def checkpointed_layer_count(layers: int, every_n: int) -> int:
    """The layers transformers checkpoints with `every_n_layers`: those whose index is a multiple of it."""
    return math.ceil(layers / every_n)


def attn_implementation_is_flash(name: str) -> bool:
    return name.startswith("flash_attention")
