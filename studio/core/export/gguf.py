"""GGUF export for llama.cpp and Ollama: Llama, Mistral and Qwen2 models, f16 or q8_0.

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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.core.export.staging import (
    ExportError,
    ProgressCallback,
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

GGUF_TYPES = ("f16", "q8_0")
# The one default of `export gguf --type` and the Export dialog. q8_0 because the studio's user runs the export on
# a home machine through Ollama: the file is about half the size of f16 (an 8B model: ~8.5 GB against ~16 GB, so it
# fits an 8 GB card's RAM+VRAM budget far better and loads twice as fast) and answers nearly the same -- llama.cpp
# counts q8_0 as practically lossless. f16 stays one choice away, for those who quantise further themselves.
DEFAULT_GGUF_TYPE = "q8_0"


@dataclass(frozen=True)
class GgufFamily:
    """How one Hugging Face architecture is written: llama.cpp's architecture and whether Q/K are permuted."""

    arch: str  # a gguf.MODEL_ARCH member name
    permute_qk: bool


FAMILIES: dict[str, GgufFamily] = {
    "LlamaForCausalLM": GgufFamily("LLAMA", permute_qk=True),
    "MistralForCausalLM": GgufFamily("LLAMA", permute_qk=True),  # llama.cpp runs HF Mistral as "llama"
    "Qwen2ForCausalLM": GgufFamily("QWEN2", permute_qk=False),
}

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
                   chat_template: str, end_of_turn: list[str]) -> None:
    import gguf

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


def _plan_tensors(model_dir: Path, config: dict[str, Any], family: GgufFamily, gguf_type: str) -> list[_PlannedTensor]:
    import gguf
    from safetensors import safe_open

    arch = getattr(gguf.MODEL_ARCH, family.arch)
    name_map = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads", n_head)
    tied = config.get("tie_word_embeddings", False)
    matrix_type = gguf.GGMLQuantizationType.Q8_0 if gguf_type == "q8_0" else gguf.GGMLQuantizationType.F16
    block_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
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
            elif matrix_type == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % block_size:
                qtype = gguf.GGMLQuantizationType.F16  # rows must hold whole q8_0 blocks; as llama.cpp falls back
            else:
                qtype = matrix_type
            permute_heads = None
            if family.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                permute_heads = (n_head, n_head)
            elif family.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                permute_heads = (n_head, n_head_kv)

            def load(file=file, hf_name=hf_name, permute_heads=permute_heads) -> Any:
                import torch

                with safe_open(str(file), framework="pt") as handle:
                    tensor = handle.get_tensor(hf_name)
                if tensor.dtype not in (torch.float16, torch.float32):
                    tensor = tensor.to(torch.float32)
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
    rows = array.reshape(-1, array.shape[-1])
    out = np.empty(gguf.quant_shape_to_byte_shape(rows.shape, qtype), dtype=np.uint8)
    step = max(1, _QUANTIZE_CHUNK // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = gguf.quants.quantize(rows[start:start + step].astype(np.float32, copy=False), qtype)
    return out.reshape(*array.shape[:-1], out.shape[-1])


def _chat_templates(tokenizer: Any) -> tuple[str, Any, list[str]]:
    """(template to embed, measured turn format or an error message, end-of-turn tokens)."""
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
        fmt = measure_turn_format(tokenizer)
    except TemplateNotConvertible as error:
        return embedded, str(error), [tokenizer.eos_token] if tokenizer.eos_token else []
    return embedded, fmt, stop_tokens(fmt, tokenizer)


def write_gguf(model_dir: Path, output: Path, *, gguf_type: str = "f16", name: str | None = None,
               overwrite: bool = False, on_progress: ProgressCallback | None = None,
               cancel: threading.Event | None = None) -> GgufExport:
    """Write a merged model folder as one GGUF file, plus NAME.Modelfile and NAME.md (its card) beside it."""
    output = check_output(output, is_dir=False, overwrite=overwrite)
    with quiet_libraries():
        return _write_gguf(Path(model_dir), output, gguf_type, name, Reporter(on_progress, cancel),
                           overwrite=overwrite)


def _write_gguf(model_dir: Path, output: Path, gguf_type: str, name: str | None, report: Reporter, *,
                overwrite: bool = False) -> GgufExport:
    import gguf
    import numpy as np
    from transformers import AutoTokenizer

    from studio.core.runs.record import RunRecord

    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"GGUF type {gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}")
    config = read_model_config(model_dir)
    family = model_family(config, model_dir)
    report(0.0, f"Reading {model_dir}")
    try:
        # A merged folder of the studio's holds a standard tokenizer: never run code shipped with the folder.
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ExportError(f"{model_dir}: the tokenizer cannot be loaded: {error}") from None
    embedded_template, fmt, end_of_turn = _chat_templates(tokenizer)
    planned = _plan_tensors(model_dir, config, family, gguf_type)
    summary = RunRecord.find(model_dir)
    model_name = name or (summary.run_name if summary and summary.run_name else model_dir.name)

    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, family.arch)]
    total_bytes = sum(_tensor_nbytes(t.shape, t.qtype) for t in planned)
    ensure_free_space(output.parent, total_bytes)
    modelfile, readme = gguf_companions(output)[:2]
    with staged_output(output, is_dir=False, overwrite=overwrite) as staging, disk_errors(output.parent):
        staged = staging / output.name
        writer = gguf.GGUFWriter(str(staged), arch)
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(model_name)
            if summary is not None and summary.base_model:
                writer.add_base_model_count(1)
                writer.add_base_model_name(0, Path(summary.base_model_id).name or summary.base_model_id)
            extra = _add_hyperparameters(writer, config, family)
            file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if gguf_type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
            writer.add_file_type(file_type)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            _add_tokenizer(writer, model_dir, config, tokenizer, embedded_template, end_of_turn)

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
                report(0.02 + 0.93 * written / max(total_bytes, 1),
                       f"Writing {tensor.gguf_name} ({tensor.qtype.name.lower()})")
                writer.write_tensor_data(_encode(tensor.load(), tensor.qtype))
                written += _tensor_nbytes(tensor.shape, tensor.qtype)
            writer.flush()
        finally:
            writer.close()
        report(0.96, "Checking the file")
        _check_gguf(staged, len(planned))
        notes = _write_companions(staging, output, model_dir, tokenizer, summary, embedded_template, fmt,
                                  end_of_turn)
    report(1.0, f"GGUF written to {output}")
    return GgufExport(path=output, modelfile=modelfile, readme=readme, gguf_type=gguf_type,
                      tensor_count=len(planned), chat_template=embedded_template, stop_tokens=end_of_turn, notes=notes)


def _write_companions(staging: Path, output: Path, model_dir: Path, tokenizer: Any, summary: Any,
                      embedded_template: str, fmt: Any, end_of_turn: list[str]) -> list[str]:
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
    if isinstance(fmt, str):
        notes.append(f"The Modelfile has no TEMPLATE: the chat template could not be converted ({fmt}); Ollama "
                     "falls back to the template embedded in the GGUF file.")
        template, system = None, None
    else:
        add_bos = bool(tokenizer.bos_token) and _adds_bos(model_dir)
        template, system = go_template(fmt, include_bos=not add_bos), fmt.default_system
    modelfile = gguf_companions(output)[0]
    (staging / modelfile.name).write_text(modelfile_text(output.name, template=template, stops=end_of_turn,
                                                         system=system, modelfile=modelfile.name), encoding="utf-8")
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
                on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> GgufExport:
    """GGUF from a merged model folder, or from a run / adapter folder (merged first into a temporary folder,
    into the base `weights` given: see merge.merge_adapter)."""
    from studio.core.export.merge import merge_adapter
    from studio.core.models.adapters import resolve_adapter_dir
    from studio.core.models.source import ModelLoadError

    source, output = Path(source), Path(output)
    if output.suffix.lower() != ".gguf":
        raise ExportError(f"{output}: the output file name must end in .gguf")
    output = check_export(source, output, is_dir=False, overwrite=overwrite)  # before the merge's minutes
    if is_merged_model(source):
        return write_gguf(source, output, gguf_type=gguf_type, overwrite=overwrite, on_progress=on_progress,
                          cancel=cancel)
    try:
        resolve_adapter_dir(source)
    except ModelLoadError:
        raise ExportError(f"{source}: neither a merged model folder (config.json) nor a run or adapter folder") \
            from None
    report = Reporter(on_progress, cancel)
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
                              allow_pickle=allow_pickle, on_progress=report.part(0.0, 0.45), cancel=report.cancel)
        return write_gguf(merged, output, gguf_type=gguf_type, overwrite=overwrite,
                          on_progress=report.part(0.45, 1.0), cancel=report.cancel)
    finally:  # an error, a cancel or Ctrl-C; a killed process leaves it to the next export's clean-up
        in_use.release()
        shutil.rmtree(temp, ignore_errors=True)


MERGE_PREFIX, MERGE_LOCK = ".merge-", ".in-use"


def remove_abandoned_merges(folder: Path) -> list[Path]:
    """Remove the temporary merged copies (`.merge-*`) a killed export left in `folder` — each as big as the
    model. A copy an export still uses is locked by it and kept."""
    removed = []
    for temp in Path(folder).glob(MERGE_PREFIX + "*"):
        if temp.is_dir() and not is_locked(temp / MERGE_LOCK):
            shutil.rmtree(temp, ignore_errors=True)
            removed.append(temp)
    return removed
