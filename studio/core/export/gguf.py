"""GGUF export for llama.cpp and Ollama: Llama, Mistral, Qwen2 and Gemma 3 models, in f16, bf16, q8_0, the K-quants
(Q6_K, Q5_K_M, Q4_K_M: the studio's f16 file quantized by llama.cpp's own quantizer, export.quantize) or, where
llama.cpp is not installed, the legacy q5_1 and q4_0 the `gguf` package writes.

Written with the `gguf` package the way llama.cpp's `convert_hf_to_gguf.py` does it:
- tensor names mapped with `gguf.get_tensor_name_map` (HF `model.layers.0.self_attn.q_proj.weight`
  → GGUF `blk.0.attn_q.weight`);
- Q and K projections of the Llama family (Llama, Mistral) permuted: transformers' rotary
  embedding rotates the two halves of each head, llama.cpp's rotates interleaved pairs (Qwen2 uses
  the half-split "NEOX" rotation in llama.cpp too, so it is written as is);
- norms and other 1-D tensors in f32, every matrix in f16 or q8_0 (`gguf.quants`), tied output
  embeddings left to llama.cpp to share;
- the byte-level BPE tokenizer as llama.cpp's "gpt2" model: tokens, token types, merges, the
  pre-tokenizer name, BOS/EOS/EOT/PAD ids and whether BOS is added;
- Gemma 3's SentencePiece vocabulary (262k pieces, byte fallback) as llama.cpp's "llama" model: pieces, scores
  in the tokenizer's own merge order, token types; its RMSNorm weights written plus one (transformers' Gemma
  norm multiplies by 1 + weight, llama.cpp's by the weight), q/k norms included;
- the run's chat template embedded, without the `{% generation %}` markers (see export_ollama).
Tensors are streamed to disk one at a time, so memory stays near the size of the largest tensor.
An Ollama Modelfile and a model card are written beside the file, each named for it (NAME.gguf, NAME.Modelfile,
NAME.md, NAME.loss-curve.svg), so an f16 and a q8_0 export of one run sit side by side in one folder.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.core.export.staging import (
    ExportError,
    Reporter,
    check_export,
    check_output,
    disk_errors,
    ensure_free_space,
    gguf_companions,
    quiet_libraries,
    staged_output,
)
from studio.core.system.folder_lock import FolderLock, is_locked
from studio.core.system.tasks import NO_TASK, TaskState

GGUF_TYPES = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q5_1", "q4_0")
AUTO = "auto"
# The one default of `export gguf --type` and the Export dialog: the best-quality type whose weights, KV cache and
# compute buffer fit the card it will run on at the context the Modelfile sets (plan.gguf_fit.choose_gguf_type).
DEFAULT_GGUF_TYPE = AUTO
_WRITTEN_TYPES = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q5_1": "Q5_1", "q4_0": "Q4_0"}
"""The types the `gguf` package writes itself; the K-quants are made from an f16 file by llama.cpp."""


@dataclass(frozen=True)
class GgufFamily:
    """How one Hugging Face architecture is written: llama.cpp's architecture and whether Q/K are permuted."""

    arch: str  # a gguf.MODEL_ARCH member name
    permute_qk: bool
    vocab: str = "gpt2"
    """llama.cpp's tokenizer model: "gpt2" (byte-level BPE) or "llama" (SentencePiece pieces with scores)."""
    norm_plus_one: bool = False
    """Gemma: transformers scales by 1 + weight in RMSNorm, llama.cpp by the weight."""


FAMILIES: dict[str, GgufFamily] = {
    "LlamaForCausalLM": GgufFamily("LLAMA", permute_qk=True),
    "MistralForCausalLM": GgufFamily("LLAMA", permute_qk=True),  # llama.cpp runs HF Mistral as "llama"
    "Qwen2ForCausalLM": GgufFamily("QWEN2", permute_qk=False),
    "Gemma3ForCausalLM": GgufFamily("GEMMA3", permute_qk=False, vocab="llama", norm_plus_one=True),
}
GEMMA3_LOCAL_ROPE_BASE = 10000.0
"""llama.cpp's gemma3 graph rotates the sliding-window layers with this base, whatever the file says."""

# Pre-tokenizer regexes (from tokenizer.json) and the llama.cpp pre-tokenizer that implements each.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                 r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _TEKKEN_SPLIT: "tekken"}


@dataclass
class GgufExport:
    """What an export wrote."""

    path: Path
    modelfile: Path
    readme: Path
    gguf_type: str
    tensor_count: int
    chat_template: str
    stop_tokens: list[str]
    notes: list[str] = field(default_factory=list)
    tensor_types: Any = None
    """export.quantize.TensorTypes: general.file_type and each tensor's type, read back from the file."""
    context: int | None = None
    """The Modelfile's PARAMETER num_ctx: the context the type was sized for."""


@dataclass
class _PlannedTensor:
    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    load: Callable[[], Any]  # -> float32 numpy array, already permuted


def permute_qk(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's `LlamaModel.permute`: half-split rotary layout → interleaved pairs, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """config.json of a merged model folder, with a clear error when it is not one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir}: no such folder")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{model_dir}: not a model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExportError(f"{config_file}: cannot be read: {error}") from None
    if "text_config" in config and "num_hidden_layers" not in config:
        config = {**config, **config["text_config"]}
    return config


def model_family(config: dict[str, Any], model_dir: Path) -> GgufFamily:
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else config.get("model_type", "?")
    family = FAMILIES.get(architecture)
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise ExportError(f"{model_dir}: GGUF export supports {supported}; this model is {architecture}")
    return family


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({model_dir / name for name in weight_map.values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        from studio.core.models.weights import pickle_refusal, pickle_weight_files

        if pickles := pickle_weight_files(model_dir):  # the GGUF writer reads safetensors alone: convert is the way
            raise ExportError(pickle_refusal(pickles[0], model_dir, opt_in=None))
        raise ExportError(f"{model_dir}: no safetensors weights (merge the adapter first, or save the model "
                          "with safe_serialization)")
    return files


def _rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    params = dict(config.get("rope_parameters") or {})
    if "full_attention" in params:  # per layer type (Gemma 3): the global layers' rotation is the file's
        local = params.get("sliding_attention") or {}
        if float(local.get("rope_theta", GEMMA3_LOCAL_ROPE_BASE)) != GEMMA3_LOCAL_ROPE_BASE:
            raise ExportError(f"sliding-window layers with rope base {local['rope_theta']}: llama.cpp runs them "
                              f"with {GEMMA3_LOCAL_ROPE_BASE:g}")
        params = dict(params["full_attention"])
    if not params:  # transformers 4 config layout
        params = dict(config.get("rope_scaling") or {})
        if "type" in params and "rope_type" not in params:
            params["rope_type"] = params["type"]
        if "rope_theta" in config:
            params["rope_theta"] = config["rope_theta"]
    return params


def _llama3_rope_factors(config: dict[str, Any], rope: dict[str, Any]) -> Any:
    """Llama 3.1's frequency factors, as convert_hf_to_gguf.py writes them (`rope_freqs.weight`)."""
    import numpy as np

    base = rope.get("rope_theta", 10000.0)
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", 8.0)
    low_freq_factor = rope.get("low_freq_factor", 1.0)
    high_freq_factor = rope.get("high_freq_factor", 4.0)
    old_context_len = rope.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1.0)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _add_hyperparameters(writer: Any, config: dict[str, Any], family: GgufFamily) -> list[tuple[str, Any]]:
    """Architecture metadata; returns extra tensors to write (Llama 3.1 rope factors)."""
    import gguf

    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    if family.arch == "GEMMA3":
        writer.add_sliding_window(config["sliding_window"])
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if config.get(key) is not None:
                raise ExportError(f"{key} {config[key]}: not written by the studio's Gemma 3 export")
    if family.arch == "LLAMA":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(config.get("head_dim")
                                        or config["hidden_size"] // config["num_attention_heads"])
    rope = _rope_parameters(config)
    if "rope_theta" in rope:
        writer.add_rope_freq_base(float(rope["rope_theta"]))
    extra: list[tuple[str, Any]] = []
    rope_type = str(rope.get("rope_type") or "default").lower()
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif rope_type == "llama3":
        extra.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(config, rope)))
    elif rope_type != "default":
        raise ExportError(f"rope scaling {rope_type!r} is not supported by the GGUF export")
    return extra


def _pre_tokenizer(tokenizer_json: dict[str, Any], model_dir: Path) -> str:
    """The llama.cpp pre-tokenizer name matching this tokenizer's split regex."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    patterns = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not byte_level:
        raise ExportError(f"{model_dir / 'tokenizer.json'}: only byte-level BPE tokenizers (Llama 3, Qwen 2, "
                          "Mistral Tekken) can be written to GGUF by the studio; use llama.cpp's "
                          "convert_hf_to_gguf.py for SentencePiece tokenizers")
    if not patterns:
        if byte_level[0].get("use_regex", True):
            return "gpt-2"
        raise ExportError(f"{model_dir / 'tokenizer.json'}: the tokenizer has no pre-tokenizer pattern")
    name = PRE_TOKENIZERS.get(patterns[0])
    if name is None:
        raise ExportError(f"{model_dir / 'tokenizer.json'}: pre-tokenizer pattern not known to llama.cpp's "
                          f"Llama 3 / Qwen 2 / Tekken tokenizers: {patterns[0]!r}")
    return name


def _add_tokenizer(writer: Any, model_dir: Path, config: dict[str, Any], tokenizer: Any,
                   chat_template: str, end_of_turn: list[str], family: GgufFamily = FAMILIES["LlamaForCausalLM"]) \
        -> None:
    import gguf

    if family.vocab == "llama":
        return _add_sentencepiece_tokenizer(writer, model_dir, config, tokenizer, chat_template, end_of_turn)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json (a fast tokenizer is needed for GGUF export)")
    tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if tokenizer_json.get("model", {}).get("type") != "BPE":
        raise ExportError(f"{tokenizer_file}: only BPE tokenizers can be written to GGUF by the studio")
    pre = _pre_tokenizer(tokenizer_json, model_dir)

    vocab = tokenizer.get_vocab()
    vocab_size = config.get("vocab_size", len(vocab))
    if max(vocab.values()) >= vocab_size:
        raise ExportError(f"{tokenizer_file}: the tokenizer has ids up to {max(vocab.values())} but the model's "
                          f"embedding has {vocab_size} rows")
    reverse = {i: token for token, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    added_decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            special = added_decoder[i].special or (token.startswith("<|") and token.endswith("|>"))
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise ExportError(f"{tokenizer_file}: the tokenizer has no BPE merges")
    special.chat_template = chat_template
    special.add_to_gguf(writer, quiet=True)
    eot = next((vocab[t] for t in end_of_turn if t in vocab), None)
    if eot is not None:
        writer.add_eot_token_id(eot)


_BYTE_PIECE = "<0x{:02X}>"


def sentencepiece_vocab(tokenizer_json: dict[str, Any], tokenizer: Any, vocab_size: int) \
        -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, token types) of a SentencePiece BPE vocabulary from its tokenizer.json.

    llama.cpp's SentencePiece tokenizer merges, at each step, the adjacent pair whose joined piece has the highest
    score; the tokenizer.json lists its merges in the order they apply. So a piece made by the merge of rank r gets
    score -r: llama.cpp then merges in the order transformers does (checked by tokenizing both ways in the tests).
    Pieces no merge makes (single characters, bytes) are never a merge's result; they score below every merge.
    """
    import gguf

    model = tokenizer_json["model"]
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    vocab = tokenizer.get_vocab()
    reverse = {i: piece for piece, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    unknown = tokenizer.unk_token
    floor = -float(len(ranks) + 1)
    pieces, scores, types = [], [], []
    for i in range(vocab_size):
        piece = reverse.get(i)
        if piece is None:
            pieces.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            pieces.append(piece)
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNKNOWN if piece == unknown else
                         gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            pieces.append(piece)
            scores.append(0.0)
            types.append(gguf.TokenType.BYTE)
        else:
            pieces.append(piece)
            scores.append(-float(ranks[piece]) if piece in ranks else floor)
            types.append(gguf.TokenType.UNKNOWN if piece == unknown else gguf.TokenType.NORMAL)
    return pieces, scores, types


def _add_sentencepiece_tokenizer(writer: Any, model_dir: Path, config: dict[str, Any], tokenizer: Any,
                                 chat_template: str, end_of_turn: list[str]) -> None:
    import gguf

    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json (a fast tokenizer is needed for GGUF export)")
    tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ExportError(f"{tokenizer_file}: a SentencePiece BPE vocabulary with byte fallback (Gemma's) was "
                          f"expected, not {model.get('type')}")
    vocab = tokenizer.get_vocab()
    vocab_size = config.get("vocab_size", len(vocab))
    if max(vocab.values()) >= vocab_size:
        raise ExportError(f"{tokenizer_file}: the tokenizer has ids up to {max(vocab.values())} but the model's "
                          f"embedding has {vocab_size} rows")
    pieces, scores, types = sentencepiece_vocab(tokenizer_json, tokenizer, vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(False)  # Gemma's normaliser only turns spaces into ▁; it adds none in front
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(pieces))
    special.chat_template = chat_template
    special.add_to_gguf(writer, quiet=True)
    eot = next((vocab[t] for t in end_of_turn if t in vocab), None)
    if eot is not None:
        writer.add_eot_token_id(eot)


def _plan_tensors(model_dir: Path, config: dict[str, Any], family: GgufFamily, gguf_type: str) -> list[_PlannedTensor]:
    import gguf
    from safetensors import safe_open

    arch = getattr(gguf.MODEL_ARCH, family.arch)
    name_map = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads", n_head)
    tied = config.get("tie_word_embeddings", False)
    matrix_type = getattr(gguf.GGMLQuantizationType, _WRITTEN_TYPES[gguf_type])
    block_size = gguf.GGML_QUANT_SIZES[matrix_type][0]
    planned: list[_PlannedTensor] = []
    for file in _safetensors_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            names = list(handle.keys())
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
        for hf_name in names:
            if hf_name.endswith(".rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"{file}: tensor {hf_name} has no GGUF name for the {family.arch.lower()} "
                                  "architecture")
            shape = shapes[hf_name]
            if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
                qtype = gguf.GGMLQuantizationType.F32
            elif shape[-1] % block_size:
                qtype = gguf.GGMLQuantizationType.F16  # rows must hold whole blocks; as llama.cpp falls back
            else:
                qtype = matrix_type
            plus_one = family.norm_plus_one and hf_name.endswith("norm.weight")
            permute_heads = None
            if family.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                permute_heads = (n_head, n_head)
            elif family.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                permute_heads = (n_head, n_head_kv)

            def load(file=file, hf_name=hf_name, permute_heads=permute_heads, plus_one=plus_one) -> Any:
                import torch

                with safe_open(str(file), framework="pt") as handle:
                    tensor = handle.get_tensor(hf_name)
                if tensor.dtype not in (torch.float16, torch.float32) or plus_one:
                    tensor = tensor.to(torch.float32)
                if plus_one:
                    tensor = tensor + 1.0
                if permute_heads is not None:
                    tensor = permute_qk(tensor, *permute_heads)
                return tensor.numpy()

            planned.append(_PlannedTensor(hf_name, gguf_name, shape, qtype, load))
    return planned


def _tensor_nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


_QUANTIZE_CHUNK = 1 << 22  # values per quantisation step: keeps the numpy q8_0 scratch arrays small


def _encode(array: Any, qtype: Any) -> Any:
    """The tensor in its GGUF type; q8_0 is quantised a few rows at a time to bound the scratch memory."""
    import gguf
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16)
    if qtype == gguf.GGMLQuantizationType.BF16:
        return gguf.quants.quantize(array.astype(np.float32, copy=False), qtype)
    rows = array.reshape(-1, array.shape[-1])
    out = np.empty(gguf.quant_shape_to_byte_shape(rows.shape, qtype), dtype=np.uint8)
    step = max(1, _QUANTIZE_CHUNK // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = gguf.quants.quantize(rows[start:start + step].astype(np.float32, copy=False), qtype)
    return out.reshape(*array.shape[:-1], out.shape[-1])


def _chat_templates(tokenizer: Any, conversations: list[list[dict[str, str]]] = ()) -> tuple[str, Any, list[str]]:
    """(template to embed, measured turn format or an error message, end-of-turn tokens); the format must render
    the run's own `conversations` exactly as the chat template does."""
    from studio.core.data.tokens import ensure_chat_template
    from studio.core.export.ollama import (
        TemplateNotConvertible,
        measure_turn_format,
        stop_tokens,
        strip_generation_markers,
    )

    original = ensure_chat_template(tokenizer)
    embedded = strip_generation_markers(original)
    try:
        fmt = measure_turn_format(tokenizer, conversations)
    except TemplateNotConvertible as error:
        return embedded, str(error), [tokenizer.eos_token] if tokenizer.eos_token else []
    return embedded, fmt, stop_tokens(fmt, tokenizer)


def write_gguf(model_dir: Path, output: Path, *, gguf_type: str = "f16", name: str | None = None,
               overwrite: bool = False, context: int | None = None, task: TaskState = NO_TASK,
               conversations: list[list[dict[str, str]]] = ()) -> GgufExport:
    """Write a merged model folder as one GGUF file, plus NAME.Modelfile and NAME.md (its card) beside it;
    `gguf_type` "auto" is the best type that fits the card at `context` (choose_type). The Modelfile's template is
    checked on `conversations` (the run's own)."""
    output = check_output(output, is_dir=False, overwrite=overwrite)
    if gguf_type == AUTO:
        gguf_type, context = _auto_type(model_dir, context)
    with quiet_libraries():
        return _write_gguf(Path(model_dir), output, gguf_type, name, Reporter(task),
                           overwrite=overwrite, context=context, conversations=conversations)


def choose_type(model_dir: Path, context: int | None = None) -> Any:
    """plan.gguf_fit.choose_gguf_type for a merged model folder or a run / adapter folder on this machine's card (or
    RAM), at `context` (default: twice the run's max_length, at least 2048); the K-quants only where a quantizer is
    installed. The one rule behind `export gguf --type auto` and the Export dialog's preselection."""
    from studio.core.export.quantize import find_quantizer
    from studio.core.plan.gguf_fit import choose_gguf_type, default_context, detect_budget
    from studio.core.plan.vram import ModelShape, ShapeError

    config, max_length = model_shape_config(Path(model_dir))
    model_family(config, Path(model_dir))  # an architecture the writer does not know is refused as such
    try:
        shape = ModelShape.from_config(config)
    except ShapeError as error:
        raise ExportError(f"{model_dir}: {error}") from None
    return choose_gguf_type(shape, context or default_context(max_length), detect_budget(),
                            k_quants=find_quantizer() is not None)


def model_shape_config(source: Path) -> tuple[dict[str, Any], int | None]:
    """(config.json of the model an export writes, the run's max_length when `source` is a run or adapter)."""
    source = Path(source)
    if is_merged_model(source):
        return read_model_config(source), None
    from studio.core.config.settings import ConfigError, load_config

    run_dir = source.parent if source.name == "adapter" else source
    adapter = source if (source / "adapter_config.json").is_file() else source / "adapter"
    max_length = None
    try:
        config = load_config(run_dir / "run.toml")
        max_length = config.training.max_length
    except (ConfigError, OSError):
        config = None
    base = None
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError):
        pass
    base = base or (config.model.name_or_path if config is not None else None)
    if not base:
        raise ExportError(f"{source}: neither a merged model folder nor a run or adapter naming its base model")
    from studio.core.models.source import ModelSourceError, find_model_config

    try:
        return find_model_config(base).config, max_length
    except ModelSourceError as error:
        raise ExportError(str(error)) from None


def _auto_type(model_dir: Path, context: int | None, report: Callable[[float, str], None] | None = None
               ) -> tuple[str, int]:
    choice = choose_type(model_dir, context)
    if report is not None:
        report(0.0, f"Type: {choice.reason}")
    return choice.chosen, choice.context


def _write_gguf(model_dir: Path, output: Path, gguf_type: str, name: str | None, report: Reporter, *,
                overwrite: bool = False, context: int | None = None,
                conversations: list[list[dict[str, str]]] = ()) -> GgufExport:
    import gguf
    import numpy as np
    from transformers import AutoTokenizer

    from studio.core.export.quantize import read_tensor_types, quantize_gguf, require_quantizer
    from studio.core.runs.record import RunRecord

    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"GGUF type {gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}")
    quantizer = require_quantizer(gguf_type)
    written_type = gguf_type if quantizer is None else "f16"
    config = read_model_config(model_dir)
    family = model_family(config, model_dir)
    report(0.0, f"Reading {model_dir}")
    try:
        # A merged folder of the studio's holds a standard tokenizer: never run code shipped with the folder.
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ExportError(f"{model_dir}: the tokenizer cannot be loaded: {error}") from None
    embedded_template, fmt, end_of_turn = _chat_templates(tokenizer, conversations)
    planned = _plan_tensors(model_dir, config, family, written_type)
    summary = RunRecord.find(model_dir)
    model_name = name or (summary.run_name if summary and summary.run_name else model_dir.name)

    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, family.arch)]
    total_bytes = sum(_tensor_nbytes(t.shape, t.qtype) for t in planned)
    ensure_free_space(output.parent, total_bytes if quantizer is None else total_bytes * 3 // 2)
    modelfile, readme = gguf_companions(output)[:2]
    share = 0.93 if quantizer is None else 0.6  # of the progress bar, for writing the (f16) file
    with staged_output(output, is_dir=False, overwrite=overwrite) as staging, disk_errors(output.parent):
        staged = staging / output.name
        if quantizer is not None:  # the f16 file llama.cpp quantizes, beside the staged output
            staged = staging / f"{output.stem}.f16-for-quantizing.gguf"
        writer = gguf.GGUFWriter(str(staged), arch)
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(model_name)
            if summary is not None and summary.base_model:
                writer.add_base_model_count(1)
                writer.add_base_model_name(0, Path(summary.base_model_id).name or summary.base_model_id)
            extra = _add_hyperparameters(writer, config, family)
            file_type = getattr(gguf.LlamaFileType, f"MOSTLY_{written_type.upper()}")
            writer.add_file_type(file_type)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            _add_tokenizer(writer, model_dir, config, tokenizer, embedded_template, end_of_turn, family)

            for tensor_name, data in extra:
                planned.insert(0, _PlannedTensor(tensor_name, tensor_name, data.shape, gguf.GGMLQuantizationType.F32,
                                                 lambda data=data: data))
            for tensor in planned:
                nbytes = _tensor_nbytes(tensor.shape, tensor.qtype)
                if tensor.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                    dtype = np.float32 if tensor.qtype == gguf.GGMLQuantizationType.F32 else np.float16
                    writer.add_tensor_info(tensor.gguf_name, tensor.shape, np.dtype(dtype), nbytes)
                else:
                    byte_shape = gguf.quant_shape_to_byte_shape(tensor.shape, tensor.qtype)
                    writer.add_tensor_info(tensor.gguf_name, byte_shape, np.dtype(np.uint8), nbytes,
                                           raw_dtype=tensor.qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            written = 0
            for tensor in planned:
                report(0.02 + share * written / max(total_bytes, 1),
                       f"Writing {tensor.gguf_name} ({tensor.qtype.name.lower()})")
                writer.write_tensor_data(_encode(tensor.load(), tensor.qtype))
                written += _tensor_nbytes(tensor.shape, tensor.qtype)
            writer.flush()
        finally:
            writer.close()
        if quantizer is not None:
            report(0.65, f"Quantizing to {gguf_type} with {quantizer.describe()}")
            quantize_gguf(staged, staging / output.name, gguf_type, log=staging / f"{output.stem}.quantize.log",
                          quantizer=quantizer, task=report)
            staged.unlink()
            (staging / f"{output.stem}.quantize.log").unlink()
            staged = staging / output.name
        report(0.96, "Checking the file")
        _check_gguf(staged, len(planned))
        tensor_types = read_tensor_types(staged, gguf_type)
        expected_file_type = f"MOSTLY_{gguf_type.upper()}"
        if tensor_types.file_type != expected_file_type:
            raise ExportError(f"{output}: general.file_type is {tensor_types.file_type}, not {expected_file_type}")
        extra_notes = [f"Tensor types: {tensor_types.summary()}."]
        if tensor_types.fallbacks:
            extra_notes.append(f"{len(tensor_types.fallbacks)} tensor(s) fell back to another type in llama.cpp "
                               f"(rows not a multiple of 256): {'; '.join(tensor_types.fallbacks[:6])}"
                               + ("; …" if len(tensor_types.fallbacks) > 6 else "") + ".")
        notes = _write_companions(staging, output, model_dir, tokenizer, summary, embedded_template, fmt,
                                  end_of_turn, context=context, extra_notes=extra_notes)
    report(1.0, f"GGUF written to {output}")
    return GgufExport(path=output, modelfile=modelfile, readme=readme, gguf_type=gguf_type,
                      tensor_count=len(planned), chat_template=embedded_template, stop_tokens=end_of_turn, notes=notes,
                      tensor_types=tensor_types, context=context)


def _write_companions(staging: Path, output: Path, model_dir: Path, tokenizer: Any, summary: Any,
                      embedded_template: str, fmt: Any, end_of_turn: list[str], *, context: int | None = None,
                      extra_notes: list[str] = ()) -> list[str]:
    """NAME.Modelfile and the model card NAME.md (+ its loss curve) into the staging folder; returns the notes."""
    from studio.core.export.model_card import write_model_card
    from studio.core.export.ollama import go_template, modelfile_text

    notes: list[str] = []
    if embedded_template != tokenizer.chat_template:
        notes.append("The chat template is embedded without its {% generation %} markers, which only mark the "
                     "assistant's tokens for training and which llama.cpp's template engine does not know.")
    if summary is not None and summary.merged_into:
        notes.append(f"Merged into {summary.merged_into}.")
    if summary is not None and summary.agreement:
        notes.append(f"Agreement with the trained model: {summary.agreement}.")
    notes += extra_notes
    if isinstance(fmt, str):
        notes.append(f"The Modelfile has no TEMPLATE: the chat template could not be converted ({fmt}); Ollama "
                     "falls back to the template embedded in the GGUF file.")
        template, system = None, None
    else:
        add_bos = bool(tokenizer.bos_token) and _adds_bos(model_dir)
        template, system = go_template(fmt, include_bos=not add_bos), fmt.default_system
        notes += fmt.notes
    modelfile = gguf_companions(output)[0]
    (staging / modelfile.name).write_text(modelfile_text(output.name, template=template, stops=end_of_turn,
                                                         system=system, modelfile=modelfile.name,
                                                         num_ctx=context), encoding="utf-8")
    write_model_card(staging, summary, "gguf", files={"gguf": output.name, "modelfile": modelfile.name}, notes=notes,
                     name=output.stem)
    return notes


def _adds_bos(model_dir: Path) -> bool:
    import gguf

    return bool(gguf.SpecialVocab(model_dir).add_special_token.get("bos"))


def _check_gguf(path: Path, tensor_count: int) -> None:
    """Read the file back: a truncated or malformed file fails here, not in the user's llama.cpp."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # the reader raises ValueError / struct.error on damaged files
        raise ExportError(f"{path}: the written GGUF file does not read back: {error}") from None
    if len(reader.tensors) != tensor_count:
        raise ExportError(f"{path}: {len(reader.tensors)} tensors read back, {tensor_count} written")


def is_merged_model(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def export_gguf(source: Path, output: Path, *, gguf_type: str = "f16", weights: str = "trained",
                trust_remote_code: bool | None = None, overwrite: bool = False, allow_pickle: bool | None = None,
                context: int | None = None, task: TaskState = NO_TASK) -> GgufExport:
    """GGUF from a merged model folder, or from a run / adapter folder (merged first into a temporary folder,
    into the base `weights` given: see merge.merge_adapter). `gguf_type` "auto": the best type that fits this
    machine's card at `context` (choose_type); the Modelfile's num_ctx is `context` (default: twice the run's
    max_length, at least 2048)."""
    from studio.core.export.quantize import require_quantizer
    from studio.core.plan.gguf_fit import KV_PADDING, default_context

    from studio.core.export.merge import merge_adapter
    from studio.core.models.adapters import resolve_adapter_dir
    from studio.core.models.source import ModelLoadError

    source, output = Path(source), Path(output)
    if output.suffix.lower() != ".gguf":
        raise ExportError(f"{output}: the output file name must end in .gguf")
    output = check_export(source, output, is_dir=False, overwrite=overwrite)  # before the merge's minutes
    if context is not None and context < KV_PADDING:
        raise ExportError(f"context {context}: at least {KV_PADDING} tokens (llama.cpp's smallest KV cache)")
    if gguf_type == AUTO:
        gguf_type, context = _auto_type(source, context, Reporter(task))
    elif gguf_type not in GGUF_TYPES:
        raise ExportError(f"GGUF type {gguf_type!r}: choose one of {AUTO}, {', '.join(GGUF_TYPES)}")
    require_quantizer(gguf_type)  # before the merge's minutes too
    if context is None:
        try:
            context = default_context(model_shape_config(source)[1])
        except ExportError:  # no base model to read here: the merge says so in its own words
            context = default_context(None)
    if is_merged_model(source):
        return write_gguf(source, output, gguf_type=gguf_type, overwrite=overwrite, context=context, task=task)
    try:
        resolve_adapter_dir(source)
    except ModelLoadError:
        raise ExportError(f"{source}: neither a merged model folder (config.json) nor a run or adapter folder") \
            from None
    report = Reporter(task)
    with disk_errors(output.parent):
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_merges(output.parent)
        # Beside the output, not in /tmp: the merged copy is as big as the model, and a full disk
        # is then reported for the folder the user chose.
        temp = Path(tempfile.mkdtemp(prefix=MERGE_PREFIX, dir=output.parent))
    # Held while the merged copy is in use, so that another export into the same folder knows it is not abandoned.
    in_use = FolderLock(temp / MERGE_LOCK)
    in_use.acquire()
    try:
        merged = merge_adapter(source, temp / "merged", weights=weights, trust_remote_code=trust_remote_code,
                              allow_pickle=allow_pickle, task=report.part(0.0, 0.45))
        return write_gguf(merged, output, gguf_type=gguf_type, overwrite=overwrite, context=context,
                          task=report.part(0.45, 1.0), conversations=run_conversations(source))
    finally:  # an error, a cancel or Ctrl-C; a killed process leaves it to the next export's clean-up
        in_use.release()
        shutil.rmtree(temp, ignore_errors=True)


MERGE_PREFIX, MERGE_LOCK = ".merge-", ".in-use"
TEMPLATE_CHECK_ROWS = 200
"""The run's conversations the Modelfile's template is checked on: the first rows of its data."""


def run_conversations(run_or_adapter: Path) -> list[list[dict[str, str]]]:
    """The run's own conversations (its data's first TEMPLATE_CHECK_ROWS rows), for checking the Modelfile's
    template; none where the data cannot be read any more (the probes still check the template)."""
    from studio.core.chat.conversations import run_examples

    examples = run_examples(run_or_adapter, TEMPLATE_CHECK_ROWS) or []
    return [example["messages"] for example in examples if example.get("messages")]


def remove_abandoned_merges(folder: Path) -> list[Path]:
    """Remove the temporary merged copies (`.merge-*`) a killed export left in `folder` — each as big as the
    model. A copy an export still uses is locked by it and kept."""
    removed = []
    for temp in Path(folder).glob(MERGE_PREFIX + "*"):
        if temp.is_dir() and not is_locked(temp / MERGE_LOCK):
            shutil.rmtree(temp, ignore_errors=True)
            removed.append(temp)
    return removed
