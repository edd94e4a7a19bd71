"""Which GGUF type runs on this card: each type's file size and the memory llama.cpp needs to run it at a context,
against the card's memory (or the RAM), and the best-quality type that fits.

The memory is what llama.cpp allocates, in its own three parts (it logs each when it loads a model):
- **weights** ("model buffer size"): every tensor in the type llama.cpp's quantizer gives it. A K-quant file is not
  one type: `gguf_tensor_types` predicts each tensor's type by llama.cpp's own rules (llama-quant.cpp,
  `llama_tensor_get_type`): the output matrix in Q6_K, the value projections and the MLP down projections of some
  layers (`use_more_bits`) in Q6_K for Q4_K_M/Q5_K_M, and a tensor whose rows are not a multiple of 256 in the
  fallback type llama.cpp takes (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0). On a GPU the input embedding stays in RAM
  (llama.cpp keeps the input layer on the CPU), so it is not counted on the card unless it is also the output
  (tied embeddings).
- **KV cache** ("KV buffer size"): keys and values in f16 for every layer and every position of the context
  (llama.cpp rounds the context up to a multiple of 256).
- **compute buffer** ("compute buffer size"): the scratch of one micro-batch of 512 tokens, dominated by the
  attention scores (context × batch × (heads + 1) floats) or, for a large vocabulary, the logits; measured on the
  test model with llama.cpp's flash attention off (its CPU default). On CUDA llama.cpp turns flash attention on
  where it can, which needs less, so the figure errs on the safe side.
tests/core/test_export_quant.py checks all three against what llama.cpp logs for the test model.

On a card the budget is its total memory less what the desktop holds (DESKTOP_BYTES) and the CUDA context of the
process that runs it (vram.CUDA_CONTEXT_BYTES); on the CPU it is the RAM less what the system holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from studio.core.plan.vram import CUDA_CONTEXT_BYTES, GIB, MIB, ModelShape
from studio.core.system.units import format_bytes

# (elements per block, bytes per block), as ggml stores each type (gguf.GGML_QUANT_SIZES).
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q5_1": (32, 24), "Q5_0": (32, 22),
          "Q4_0": (32, 18), "Q6_K": (256, 210), "Q5_K": (256, 176), "Q4_K": (256, 144)}
K_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
"""llama.cpp's type for a tensor whose rows do not hold whole 256-value K blocks."""


@dataclass(frozen=True)
class GgufType:
    name: str
    """As `export gguf --type` takes it: "q4_k_m"."""
    label: str
    main: str
    """The type most matrices get."""
    needs_llama_cpp: bool
    quality: str
    """What the type costs in answers, in words."""


GGUF_TYPE_INFO: dict[str, GgufType] = {t.name: t for t in (
    GgufType("f16", "F16", "F16", False, "the trained weights in 16 bits: answers as the merged model does"),
    GgufType("bf16", "BF16", "BF16", False, "16 bits with float32's range; as f16 for a model trained in bf16"),
    GgufType("q8_0", "Q8_0", "Q8_0", False, "8 bits: practically lossless"),
    GgufType("q6_k", "Q6_K", "Q6_K", True, "6.6 bits: close to q8_0"),
    GgufType("q5_k_m", "Q5_K_M", "Q5_K", True, "5.7 bits: a small loss"),
    GgufType("q4_k_m", "Q4_K_M", "Q4_K", True, "4.9 bits: what Ollama users run on small cards; a measurable loss"),
    GgufType("q5_1", "Q5_1 (legacy)", "Q5_1", False,
             "legacy 6 bits, written without llama.cpp: larger than q5_k_m for a similar loss"),
    GgufType("q4_0", "Q4_0 (legacy)", "Q4_0", False,
             "legacy 4.5 bits, written without llama.cpp: a larger loss than q4_k_m"),
)}
QUALITY_ORDER = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q5_1", "q4_0")
"""Best answers first (bf16 is listed, never preselected: it answers as f16 in the same size)."""

DESKTOP_BYTES = 512 * MIB
"""What a desktop session (compositor, browser) keeps on a consumer card: 300-600 MiB on the cards we have seen."""
SYSTEM_RAM_BYTES = 2 * GIB
"""What the operating system and the desktop keep of the RAM when the model runs on the CPU."""
LLAMA_UBATCH = 512
"""llama.cpp's default micro-batch (n_ubatch): the compute buffer is sized for one."""
KV_PADDING = 256
"""llama.cpp rounds the KV cache's cells up to a multiple of this."""
MIN_CONTEXT = 2048


def default_context(max_length: int | None) -> int:
    """Twice the run's max_length (a conversation and its reply), at least 2048."""
    return max(MIN_CONTEXT, 2 * int(max_length or 0))


def _use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get more bits in Q4_K_M and Q5_K_M."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def _matrix_type(wanted: str, row: int) -> str:
    if wanted in K_FALLBACK and row % 256:
        wanted = K_FALLBACK[wanted]
    if BLOCKS[wanted][0] > 1 and row % BLOCKS[wanted][0]:
        return "F16"
    return wanted


def gguf_tensor_types(shape: ModelShape, gguf_type: str) -> dict[str, tuple[str, int]]:
    """Each tensor of a Llama-layout GGUF file (its GGUF name) → (its type, its element count), as the studio's
    writer (f16, bf16, q8_0, q5_1, q4_0) or llama.cpp's quantizer (the K-quants) gives them."""
    info = GGUF_TYPE_INFO[gguf_type]
    hidden, layers, inter = shape.hidden_size, shape.num_hidden_layers, shape.intermediate_size
    q_width, kv_width = shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim
    k_quant = info.main.endswith("_K")
    tied = shape.tie_word_embeddings

    def matrix(role: str, row: int, layer: int = -1) -> str:
        wanted = info.main
        if k_quant and role == "output":
            wanted = "Q6_K"
        elif gguf_type in ("q4_k_m", "q5_k_m") and role in ("attn_v", "ffn_down") and _use_more_bits(layer, layers):
            wanted = "Q6_K"
        return _matrix_type(wanted, row)

    tensors: dict[str, tuple[str, int]] = {
        "token_embd.weight": (matrix("output" if tied else "token_embd", hidden), hidden * shape.vocab_size),
        "output_norm.weight": ("F32", hidden)}
    if not tied:
        tensors["output.weight"] = (matrix("output", hidden), hidden * shape.vocab_size)
    for i in range(layers):
        for role, row, rows in (("attn_q", hidden, q_width), ("attn_k", hidden, kv_width),
                                ("attn_v", hidden, kv_width), ("attn_output", q_width, hidden),
                                ("ffn_gate", hidden, inter), ("ffn_up", hidden, inter), ("ffn_down", inter, hidden)):
            tensors[f"blk.{i}.{role}.weight"] = (matrix(role, row, i), row * rows)
        tensors[f"blk.{i}.attn_norm.weight"] = ("F32", hidden)
        tensors[f"blk.{i}.ffn_norm.weight"] = ("F32", hidden)
        if shape.attention_bias:
            for role, width in (("attn_q", q_width), ("attn_k", kv_width), ("attn_v", kv_width)):
                tensors[f"blk.{i}.{role}.bias"] = ("F32", width)
    return tensors


def tensor_bytes(type_name: str, elements: int) -> int:
    block, size = BLOCKS[type_name]
    return elements // block * size


def weights_bytes(shape: ModelShape, gguf_type: str, *, on_card: bool = False) -> int:
    """The tensors' bytes; `on_card`: without the input embedding, which llama.cpp keeps in RAM (unless tied)."""
    return sum(tensor_bytes(kind, n) for name, (kind, n) in gguf_tensor_types(shape, gguf_type).items()
               if not (on_card and name == "token_embd.weight" and not shape.tie_word_embeddings))


def metadata_bytes(shape: ModelShape) -> int:
    """The file's header: mostly the vocabulary (token strings, types, merges), about 24 bytes a token."""
    return 8 * 1024 + 24 * shape.vocab_size


def file_bytes(shape: ModelShape, gguf_type: str) -> int:
    return weights_bytes(shape, gguf_type) + metadata_bytes(shape)


def kv_cache_bytes(shape: ModelShape, context: int) -> int:
    """Keys and values in f16, every layer, every cell (the context rounded up as llama.cpp does)."""
    cells = math.ceil(context / KV_PADDING) * KV_PADDING
    return 2 * shape.num_hidden_layers * cells * shape.num_key_value_heads * shape.head_dim * 2


def compute_buffer_bytes(shape: ModelShape, context: int) -> int:
    """One micro-batch's scratch without flash attention: the larger of the attention step (scores for every head
    plus one, and a few hidden-sized rows) and the output step (the logits); fitted to llama.cpp's logged sizes."""
    cells = math.ceil(context / KV_PADDING) * KV_PADDING
    batch = min(LLAMA_UBATCH, cells)
    attention = 4 * batch * (cells * (shape.num_attention_heads + 1) + 6 * shape.hidden_size + 5)
    output = 4 * batch * (shape.hidden_size + shape.vocab_size)
    return max(attention, output)


@dataclass(frozen=True)
class Budget:
    """Where the model will run: a card's total memory less the desktop and the CUDA context, or the RAM."""

    total_bytes: int
    device: str = "cuda"
    name: str = ""

    @property
    def usable_bytes(self) -> int:
        reserved = SYSTEM_RAM_BYTES if self.device == "cpu" else DESKTOP_BYTES + CUDA_CONTEXT_BYTES
        return max(0, self.total_bytes - reserved)

    def describe(self) -> str:
        if self.device == "cpu":
            return (f"{format_bytes(self.usable_bytes, style='memory')} of RAM (no CUDA card: llama.cpp runs it on "
                    f"the CPU; {format_bytes(self.total_bytes, style='memory')} less "
                    f"{format_bytes(SYSTEM_RAM_BYTES, style='memory')} for the system)")
        card = self.name or "the card"
        return (f"{format_bytes(self.usable_bytes, style='memory')} on {card} "
                f"({format_bytes(self.total_bytes, style='memory')} less "
                f"{format_bytes(DESKTOP_BYTES, style='memory')} for the desktop and "
                f"{format_bytes(CUDA_CONTEXT_BYTES, style='memory')} for the CUDA context)")


def detect_budget() -> Budget:
    """The first CUDA card's total memory (NVML), else the RAM."""
    from studio.core.system.gpu import detect_gpu

    gpu = detect_gpu()
    if gpu is not None:
        return Budget(gpu.total_bytes, "cuda", gpu.name)
    import psutil

    return Budget(int(psutil.virtual_memory().total), "cpu", "RAM")


@dataclass(frozen=True)
class TypeFit:
    gguf_type: str
    file_bytes: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    fits: bool
    available: bool
    """False for a K-quant where no llama.cpp quantizer is installed."""

    @property
    def info(self) -> GgufType:
        return GGUF_TYPE_INFO[self.gguf_type]

    @property
    def run_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes

    def line(self) -> str:
        return (f"{self.info.label}: file {format_bytes(self.file_bytes, style='memory')}, runs in "
                f"{format_bytes(self.run_bytes, style='memory')} (weights "
                f"{format_bytes(self.weights_bytes, style='memory')} + KV cache "
                f"{format_bytes(self.kv_bytes, style='memory')} + compute "
                f"{format_bytes(self.compute_bytes, style='memory')})")


@dataclass
class TypeChoice:
    """Every type with its sizes, what fits, and the preselected type with the reason in words."""

    context: int
    budget: Budget
    types: list[TypeFit] = field(default_factory=list)
    chosen: str = ""
    reason: str = ""

    def fit(self, gguf_type: str) -> TypeFit:
        return next(t for t in self.types if t.gguf_type == gguf_type)


def choose_gguf_type(shape: ModelShape, context: int, budget: Budget, *, k_quants: bool = True) -> TypeChoice:
    """Each type's sizes at `context` on `budget`, and the best-quality available type whose weights, KV cache and
    compute buffer fit it; none fitting → the smallest, saying that part of it will run on the CPU. Without a
    llama.cpp quantizer (`k_quants` False) the K-quants are listed as unavailable and the legacy types offered."""
    on_card = budget.device != "cpu"
    choice = TypeChoice(context, budget)
    for name in (*QUALITY_ORDER[:1], "bf16", *QUALITY_ORDER[1:]):
        info = GGUF_TYPE_INFO[name]
        available = k_quants or not info.needs_llama_cpp
        if k_quants and name in ("q5_1", "q4_0"):
            available = False  # the K-quant of the same size answers better: legacy types only without llama.cpp
        weights = weights_bytes(shape, name, on_card=on_card)
        kv, compute = kv_cache_bytes(shape, context), compute_buffer_bytes(shape, context)
        choice.types.append(TypeFit(name, file_bytes(shape, name), weights, kv, compute,
                                    weights + kv + compute <= budget.usable_bytes, available))
    candidates = [choice.fit(name) for name in QUALITY_ORDER if choice.fit(name).available]
    where = budget.describe()
    fitting = [t for t in candidates if t.fits]
    if fitting:
        best = fitting[0]
        better = [t for t in candidates[:candidates.index(best)]]
        why = f"{best.info.label} is the best-quality type that fits {where} at a {context}-token context: " \
              f"{format_bytes(best.run_bytes, style='memory')} needed"
        if better:
            why += (f"; {better[-1].info.label} would need {format_bytes(better[-1].run_bytes, style='memory')}")
    else:
        best = candidates[-1]
        why = (f"nothing fits {where} at a {context}-token context; {best.info.label}, the smallest, needs "
               f"{format_bytes(best.run_bytes, style='memory')}, so part of it will run on the CPU (or choose a "
               "shorter context)")
    choice.chosen, choice.reason = best.gguf_type, why
    return choice
