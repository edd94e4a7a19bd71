"""The run configuration: dataclasses with help text, TOML on disk, validation that names the key.

Field names follow transformers / PEFT / TRL wherever those libraries have a name for the same
knob (`r`, `lora_alpha`, `learning_rate`, ...), so users can carry knowledge both ways. Every field
carries `metadata={"help": ...}`; the same text feeds the CLI, the Config tab's tooltips and
`docs/CONFIG.md`. Optional metadata keys drive validation and widgets: `choices`, `min`, `max`, and `above`
(an exclusive lower bound); `step` and `decimals` say how finely the Config tab steps and shows a number. Every
number the Config tab shows has both bounds here, so the form offers exactly the values a config may hold.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.methods.registry import (
    METHODS,
    SettingsProblem,
    default_method,
    method,
    method_choices_help,
    method_names,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SCHEMA_VERSION = 2
"""2: each training method's own settings in its section ([dpo] beta, [grpo] num_generations); 1 had them in
[training] (read by `upgrade_schema_1`)."""


AUTO_EVAL_MIN_ROWS, AUTO_EVAL_MAX_ROWS, AUTO_EVAL_FRACTION = 20, 1000, 0.1
"""data.eval_auto: a new run on at least MIN and fewer than MAX rows holds out FRACTION of them."""

FILE_KEY = "(file)"
"""ConfigError's key when the config file as a whole is at fault."""


class ConfigError(ValueError):
    """A configuration value a user can fix; the message names the file (if any), key and value."""

    def __init__(self, key: str, value: Any, reason: str, *, source: Path | None = None):
        self.key = key
        self.value = value
        self.reason = reason
        self.source = source
        if key == FILE_KEY:  # the file as a whole (unreadable, not TOML): "path: reason"
            super().__init__(f"{value}: {reason}")
            return
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} = {value!r}: {reason}")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


# Slotted: a setting written where none is (config.training.beta after [dpo] took it) raises instead of vanishing.
@dataclass(slots=True)
class ModelSettings:
    """Which base model to fine-tune and how to load it."""

    name_or_path: str = field(
        default="",
        metadata=_help(
            "Base model: a local folder with config.json and weights, or a Hugging Face Hub id "
            "such as meta-llama/Llama-3.2-3B-Instruct (taken from the local HF cache when present). "
            "A relative folder is read relative to the config file."
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=_help("Run Python code shipped with the model. Only for models whose code you trust."),
    )
    allow_pickle: bool = field(
        default=False,
        metadata=_help(
            "Load weights stored as pickle files (pytorch_model.bin, adapter_model.bin) when a folder has no "
            ".safetensors: a pickle can run code when it is read. Only for files you trust; better, convert them once "
            "with `finetune-studio convert FOLDER --allow-pickle`."
        ),
    )
    init_adapter: str = field(
        default="",
        metadata=_help(
            "Continue from an earlier run's adapter instead of a new one: its run folder or adapter folder. The "
            "base is loaded as that run trained it (the quantisation must match this run's), its adapter trains on "
            "(the [lora] settings are then the adapter's own) and, for dpo, kto and grpo, a frozen copy of it is the "
            "reference. The usual order: an sft run, then a preference method from it. Empty = a new adapter. A "
            "relative folder is read relative to the config file."
        ),
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata=_help(
            "Attention kernel: sdpa (PyTorch's fused attention), eager, or flash_attention_2 when installed.",
            choices=["sdpa", "eager", "flash_attention_2"],
        ),
    )


@dataclass(slots=True)
class QuantizationSettings:
    """How the frozen base weights are stored while training (QLoRA = 4-bit)."""

    mode: str = field(
        default="4bit",
        metadata=_help(
            "Base weights in 4-bit (QLoRA, least memory), 8-bit, or none (16-bit LoRA, most memory).",
            choices=["4bit", "8bit", "none"],
        ),
    )
    bnb_4bit_quant_type: str = field(
        default="nf4",
        metadata=_help("4-bit data type: nf4 (NormalFloat, best for normally distributed weights) or fp4.",
                       choices=["nf4", "fp4"]),
    )
    bnb_4bit_use_double_quant: bool = field(
        default=True,
        metadata=_help("Quantise the quantisation constants too: saves about 0.37 bits per parameter."),
    )
    compute_dtype: str = field(
        default="auto",
        metadata=_help(
            "Dtype for matrix products: auto picks bfloat16 on GPUs that support it, float16 on older "
            "GPUs and float32 on CPU.",
            choices=["auto", "bfloat16", "float16", "float32"],
        ),
    )


@dataclass(slots=True)
class LoraSettings:
    """The low-rank adapter that is actually trained (PEFT LoraConfig)."""

    r: int = field(default=16, metadata=_help("LoRA rank: size of the adapter matrices. 8–64 is typical.", min=1,
                                                   max=1024))
    lora_alpha: int = field(
        default=32, metadata=_help("LoRA scaling numerator; the update is scaled by lora_alpha / r.", min=1,
                                   max=4096)
    )
    lora_dropout: float = field(
        default=0.05, metadata=_help("Dropout on the adapter's input during training. Each adapted layer keeps its "
                                     "own dropped-out copy of its input for the backward pass; at 0 the layers "
                                     "that read one input share it. Fit to this GPU sets 0 only when the length "
                                     "does not fit otherwise, and says so: it changes training.", min=0.0, max=0.9,
                                     step=0.05, decimals=2)
    )
    target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata=_help(
            "Layers that get an adapter: 'all-linear' (every linear layer but the output head) or "
            "module names such as q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."
        ),
    )
    bias: str = field(
        default="none",
        metadata=_help("Which biases are trained: none, all, or lora_only.", choices=["none", "all", "lora_only"]),
    )
    modules_to_save: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Modules trained in full and saved with the adapter, e.g. lm_head and embed_tokens when new tokens "
            "were added. Each costs its full size again in weights, gradients and optimiser states."
        ),
    )
    use_rslora: bool = field(
        default=False,
        metadata=_help(
            "Rank-stabilised LoRA: scale the update by lora_alpha / sqrt(r) instead of lora_alpha / r, which "
            "keeps high ranks (64+) learning as fast as low ones."
        ),
    )
    use_dora: bool = field(
        default=False,
        metadata=_help(
            "DoRA: split each adapted weight into magnitude and direction. Often a little better than LoRA at "
            "low rank, but slower and uses more memory (the full weight is rebuilt at every step)."
        ),
    )


@dataclass(slots=True)
class DataSettings:
    """Where the examples come from and what the loss is computed on."""

    train_file: str = field(
        default="",
        metadata=_help(
            "Training data: a .jsonl, .json, .csv, .tsv or .parquet file, a plain text file (.txt, .md), a "
            "folder saved with datasets' save_to_disk, or a Hugging Face Hub dataset id; records are chat "
            "conversations (OpenAI 'messages', ShareGPT 'conversations'), Alpaca records, prompt/completion "
            "pairs or plain 'text'. "
            "A relative path is read relative to the config file."
        ),
    )
    eval_file: str = field(
        default="", metadata=_help("Optional separate evaluation file in the same format. Empty = none.")
    )
    eval_fraction: float = field(
        default=0.0,
        metadata=_help("Fraction of the training rows held out for evaluation (seeded). 0 = no eval split.",
                       min=0.0, max=0.5, step=0.01, decimals=2),
    )
    eval_auto: bool = field(
        default=True,
        metadata=_help(
            f"With neither an eval file nor an eval fraction, a new run on {AUTO_EVAL_MIN_ROWS:,} to "
            f"{AUTO_EVAL_MAX_ROWS - 1:,} rows holds out a tenth of them for evaluation (5 of 47), drawn with "
            "training.seed like a fraction; the run's run.toml records the fraction it used. Off = no evaluation "
            "unless one is chosen. Smaller data trains on every row; larger data gets an eval split only when asked."
        ),
    )
    train_on_responses_only: bool = field(
        default=True,
        metadata=_help(
            "Compute the loss on the assistant's replies only (prompts are masked). Turn off to also "
            "train on the user's turns."
        ),
    )
    format: str = field(
        default="auto",
        metadata=_help(
            "Record shape of the data: auto (detected from the first records and shown with its evidence), "
            "messages (OpenAI role/content turns), conversations (ShareGPT from/value turns), alpaca "
            "(instruction/input/output), prompt_completion, or text (plain text, continued pre-training).",
            choices=["auto", "messages", "conversations", "alpaca", "prompt_completion", "text"],
        ),
    )
    column_mapping: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Which source column holds which field, as field=column pairs, for data whose columns are named "
            "otherwise, e.g. prompt=question, completion=answer. Fields: messages, conversations, instruction, "
            "input, output, prompt, completion, system, text. Empty = the standard names."
        ),
    )
    encoding: str = field(
        default="utf-8",
        metadata=_help(
            "Text encoding of JSON/JSONL/CSV files: utf-8 (a byte-order mark is recognised), or a legacy "
            "one such as cp1254 (Windows Turkish), cp1252 (Windows Western European), latin-1 or utf-16. "
            "The Dataset tab detects a wrong one and offers the right one."
        ),
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata=_help(
            "Train on the good rows and skip the bad ones (each is listed in the run's log as file:line: "
            "reason). Off = any bad row stops the run before it starts."
        ),
    )
    split: str = field(
        default="train",
        metadata=_help("Split to read from a Hugging Face Hub dataset or a saved DatasetDict folder."),
    )
    text_split: str = field(
        default="blank_lines",
        metadata=_help(
            "How a plain text file (.txt, .md) is cut into training documents: blank_lines (each block of "
            "lines between blank lines is one document) or file (the whole file is one document, for long "
            "texts such as a book or an article per file). Problems are reported at a document's first line.",
            choices=["blank_lines", "file"],
        ),
    )


@dataclass(slots=True)
class TrainingSettings:
    """Optimisation settings (transformers TrainingArguments / TRL SFTConfig names)."""

    method: str = field(
        default=default_method(),
        metadata=_help(method_choices_help(), choices=list(method_names())),
    )

    # Above 0, not at least 0: a learning rate of 0 "completes" a run in which the adapter never changes.
    learning_rate: float = field(default=2e-4, metadata=_help("Peak learning rate of the adapter.", above=0.0,
                                                                 max=1.0, step=1e-5))
    num_train_epochs: float = field(
        default=3.0, metadata=_help("Passes over the training data (ignored when max_steps > 0).", min=0.0,
                                    max=1000.0, step=1.0, decimals=2)
    )
    max_steps: int = field(
        default=-1, metadata=_help("Stop after this many optimiser steps; -1 (or 0) = use num_train_epochs.", min=-1,
                                   max=10_000_000)
    )
    per_device_train_batch_size: int = field(
        default=1, metadata=_help("Examples per forward pass. Raise only if memory allows.", min=1, max=1024)
    )
    gradient_accumulation_steps: int = field(
        default=4,
        metadata=_help("Forward passes summed per optimiser step; effective batch = batch size × this.", min=1,
                       max=1024),
    )
    max_length: int = field(
        default=1024, metadata=_help("Longest tokenised example; longer ones are truncated.", min=8,
                                     max=1_048_576, step=256)
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata=_help("How the learning rate changes over the run.",
                       choices=["cosine", "linear", "constant", "constant_with_warmup"]),
    )
    warmup_ratio: float = field(
        default=0.03, metadata=_help("Fraction of the steps spent warming the learning rate up.", min=0.0, max=0.5,
                                     step=0.01, decimals=3)
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay on the adapter.", min=0.0,
                                                               max=10.0, step=0.01, decimals=3))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping threshold.", min=0.0,
                                                                max=1000.0, step=0.1, decimals=2))
    optim: str = field(
        default="auto",
        metadata=_help(
            "Optimiser: auto = paged_adamw_8bit on CUDA, adamw_torch on CPU.",
            choices=["auto", "paged_adamw_8bit", "adamw_8bit", "adamw_torch", "adamw_torch_fused", "sgd"],
        ),
    )
    gradient_checkpointing: bool = field(
        default=True, metadata=_help("Recompute activations in the backward pass: much less memory, ~30% slower.")
    )
    checkpointing_every_n_layers: int = field(
        default=1,
        metadata=_help(
            "With gradient checkpointing: checkpoint only every n-th decoder layer (transformers' every_n_layers); "
            "the others keep their activations and are not recomputed. 1 = every layer (the least memory); 2 = "
            "half of them, and so on: less recomputing, more memory. Fit to this GPU picks the largest n that "
            "fits. SFT only: TRL's DPO, KTO and GRPO trainers switch checkpointing back on for every layer around "
            "their reference and generation passes, so for them every layer is checkpointed.",
            min=1, max=1024,
        ),
    )
    seed: int = field(default=42, metadata=_help("Random seed for initialisation, shuffling and the eval split.",
                                                  min=0, max=2**31 - 1))
    logging_steps: int = field(default=1, metadata=_help("Log loss and learning rate every N steps.", min=1,
                                                         max=100_000))
    save_steps: int = field(default=50, metadata=_help("Write a resumable checkpoint every N steps.", min=1,
                                                       max=10_000_000))
    save_total_limit: int = field(default=3, metadata=_help("Keep at most this many checkpoints.", min=1,
                                                            max=1000))
    eval_steps: int = field(default=50, metadata=_help("Evaluate every N steps (when there is eval data).", min=1,
                                                       max=10_000_000))
    eval_strategy: str = field(
        default="steps",
        metadata=_help(
            "When to evaluate (only when there is eval data): every eval_steps steps, at the end of every "
            "epoch, or never.",
            choices=["steps", "epoch", "no"],
        ),
    )
    early_stopping_patience: int = field(
        default=0,
        metadata=_help(
            "Stop when the eval loss has not improved for this many evaluations in a row; 0 = never stop early. "
            "Only active when there is eval data. The run then keeps the adapter of its lowest eval loss.",
            min=0, max=1000,
        ),
    )
    score_examples: int = field(
        default=0,
        metadata=_help(
            "Scores while training: generate greedy replies for this many held-out examples (the first ones of "
            "the eval split, the same ones each time) with the adapter being trained, and score them, plotted "
            "on the Training tab beside the eval loss as the share passed (3/8). 0 = off. Needs eval data; "
            "each scoring costs one batched generation.",
            min=0, max=10_000,
        ),
    )
    score_steps: int = field(
        default=0,
        metadata=_help("Score the held-out examples every N steps; 0 = at every evaluation (eval_steps, or "
                       "each epoch).", min=0, max=10_000_000),
    )
    score_metric: str = field(
        default="auto",
        metadata=_help(
            "How a reply is scored while training: auto = tool_call when an expected reply makes a tool call "
            "(the same functions, every argument equal), else normalised (equal ignoring case, punctuation and "
            "spacing); or exact, normalised, normalised_tr, contains, tool_call, chrf (the Evaluate tab's "
            "metrics).",
            choices=["auto", "exact", "normalised", "normalised_tr", "contains", "tool_call", "chrf"],
        ),
    )
    activation_offloading: bool = field(
        default=False,
        metadata=_help(
            "Keep the activations a training step saves for its backward pass in CPU RAM instead of on the GPU "
            "(TRL's activation offloading: copies to pinned memory overlapped with the compute on a side CUDA "
            "stream). With gradient checkpointing that is the layer inputs, so a few layers' worth stays on the "
            "card whatever the length: far longer examples fit, for the time the copies cost and the offloaded size "
            "in CPU RAM. NVIDIA GPU only; ignored on a CPU. Fit to this GPU turns it on only when nothing fits "
            "without it."
        ),
    )
    embedding_on_cpu: bool = field(
        default=False,
        metadata=_help(
            "Keep the frozen 16-bit input embedding in CPU RAM instead of on the GPU (accelerate's CPU offload: its "
            "weights are copied to the card for each forward pass's lookup and dropped after it, so the backward "
            "pass runs without them). Frees its size (1 GiB for an 8B Llama 3) for activations, for one copy per "
            "micro-batch. Only with a 4-bit or 8-bit base (bitsandbytes' llm_int8_enable_fp32_cpu_offload), an "
            "untied embedding that is not trained (not in modules_to_save), on an NVIDIA GPU; ignored otherwise. "
            "Fit to this GPU turns it on only when nothing fits without it."
        ),
    )
    fast_path: bool = field(
        default=True,
        metadata=_help(
            "Use the fastest correct kernels this machine has: Liger Kernel's fused RMSNorm, RoPE and SwiGLU "
            "(NVIDIA GPU, with the [gpu] extra installed), and FlashAttention-2 instead of sdpa when installed "
            "and the GPU supports it, with padding-free batches (no compute spent on padding) when the batch "
            "size is above 1. The loss matches the plain path within floating-point tolerance. Off = the plain "
            "transformers + PEFT + TRL path."
        ),
    )
    packing: bool = field(
        default=False,
        metadata=_help(
            "Pack several short examples into each max_length sequence: fewer, fuller batches and faster "
            "epochs when most examples are much shorter than max_length."
        ),
    )
    cpu_threads: int = field(
        default=0,
        metadata=_help(
            "CPU threads a run on the CPU computes with; 0 = automatic: one core fewer than the machine has "
            "(at least 1), so the window and other work keep a core and never make every training step wait "
            "for a busy thread (measured on 2 cores: steps took 1.6x as long with 2 threads as with 1 while another "
            "process kept a core busy, and the same time when nothing else ran; benchmarks/cpu_threads.py). "
            "Runs on a GPU are not affected.",
            min=0, max=1024,
        ),
    )


@dataclass(slots=True)
class _CommonSections:
    """The sections every run has; RunConfig adds one section per training method (below)."""

    name: str = field(default="", metadata=_help("Run name; empty = generated from the model and the time."))
    model: ModelSettings = field(default_factory=ModelSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def validate(self) -> None:
        """Raise ConfigError for the first value that is out of range or inconsistent."""
        for section in SECTIONS:
            settings = getattr(self, section)
            for f in dataclasses.fields(settings):
                _check_bounds(f"{section}.{f.name}", getattr(settings, f.name), f.metadata)
        if not self.model.name_or_path:
            raise ConfigError("model.name_or_path", "", "no base model given")
        if not self.data.train_file:
            raise ConfigError("data.train_file", "", "no training data given")
        if not self.lora.target_modules:
            raise ConfigError("lora.target_modules", [], "name at least one module, or 'all-linear'")
        if "all-linear" in self.lora.target_modules and len(self.lora.target_modules) > 1:
            raise ConfigError("lora.target_modules", self.lora.target_modules,
                              "'all-linear' must stand alone (it already names every linear layer), or list "
                              "module names without it")
        if self.data.eval_file and self.data.eval_fraction > 0:
            raise ConfigError("data.eval_fraction", self.data.eval_fraction,
                              "give either an eval file or an eval fraction, not both")
        _validate_data_reading(self.data)
        if self.training.max_steps <= 0 and self.training.num_train_epochs <= 0:
            raise ConfigError("training.num_train_epochs", self.training.num_train_epochs,
                              "nothing to train: set the epochs above 0, or training.max_steps")
        _validate_method(self)
        if self.training.early_stopping_patience > 0 and self.training.eval_strategy == "no":
            raise ConfigError("training.early_stopping_patience", self.training.early_stopping_patience,
                              "early stopping needs evaluations: set training.eval_strategy to steps or epoch")
        if self.training.early_stopping_patience > 0 and not self.data.eval_file and self.data.eval_fraction <= 0:
            raise ConfigError("training.early_stopping_patience", self.training.early_stopping_patience,
                              "early stopping needs eval data: hold out a fraction (data.eval_fraction, the Dataset "
                              "tab's Eval split) or name an eval file (data.eval_file)")

    def digest(self) -> str:
        """A short stable fingerprint of the settings (the run name excluded)."""
        payload = to_dict(self)
        payload.pop("name", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


COMMON_SECTIONS = ("model", "quantization", "lora", "data", "training")
METHOD_SECTIONS = tuple(spec.name for spec in METHODS)
"""One section per training method, holding its own settings ([dpo] beta): a config keeps every method's, so
switching the method back and forth loses nothing."""
SECTIONS = (*COMMON_SECTIONS, *METHOD_SECTIONS)

RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [(spec.name, spec.settings, field(default_factory=spec.settings)) for spec in METHODS],
    bases=(_CommonSections,),
    slots=True,
)
RunConfig.__module__ = __name__  # so a RunConfig pickles (make_dataclass's `module` is Python 3.12's)
RunConfig.__doc__ = """Everything needed to reproduce a run: the common sections and each method's own."""



def _check_bounds(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if isinstance(value, float) and not math.isfinite(value):  # TOML allows nan and inf
        raise ConfigError(key, value, "must be a finite number")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, value, f"must be one of {', '.join(map(str, choices))}")
    if "above" in meta and value <= meta["above"]:
        raise ConfigError(key, value, f"must be above {meta['above']}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(key, value, f"must be at least {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(key, value, f"must be at most {meta['max']}")


def _validate_method(config: Any) -> None:
    """The chosen method's own rules (GRPO: its rewards parse, its groups fit a step), as a ConfigError."""
    spec = method(config.training.method)
    try:
        spec.validate(getattr(config, spec.name), config.training)
    except SettingsProblem as problem:
        raise ConfigError(problem.key, problem.value, problem.reason) from None


def _validate_data_reading(data: DataSettings) -> None:
    """The column mapping and encoding must be usable (checked here so a bad config fails before a run)."""
    from studio.core.data.encoding import normalise_encoding
    from studio.core.data.shape import parse_column_mapping

    try:
        parse_column_mapping(data.column_mapping)
    except ValueError as error:
        raise ConfigError("data.column_mapping", data.column_mapping, str(error)) from None
    try:
        normalise_encoding(data.encoding)
    except ValueError as error:
        raise ConfigError("data.encoding", data.encoding, str(error)) from None


def to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as plain TOML-able data."""
    data = dataclasses.asdict(config)
    for section in METHOD_SECTIONS:  # a method without settings of its own (SFT) writes no empty table
        if not data[section]:
            del data[section]
    return {"schema_version": SCHEMA_VERSION, **data}


def _coerce(key: str, value: Any, annotation: Any, source: Path | None) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted where floats are expected."""
    hint = annotation
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise ConfigError(key, value, f"expected {hint.__name__}, got a boolean", source=source)
        if not isinstance(value, hint):
            raise ConfigError(key, value, f"expected {hint.__name__}, got {type(value).__name__}", source=source)
        return value
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):  # "q_proj,v_proj" is a common hand-written form
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, value, "expected a list of strings", source=source)
        return list(value)
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _holds_schema_1_keys(data: dict[str, Any]) -> bool:
    training = data.get("training")
    return isinstance(training, dict) and any(old in training for spec in METHODS for old, _ in spec.schema_1_keys)


def upgrade_schema_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 table as version 2: each method's settings move from [training] to its own section (v1's one
    beta served dpo, orpo and kto, so each gets it). A file without schema_version that holds such keys (a
    preset or a hand-written file from before) is read the same way."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    training = data.get("training")
    if not isinstance(training, dict):
        return data
    for spec in METHODS:
        for old, new in spec.schema_1_keys:
            if old in training:
                data.setdefault(spec.name, {})
                if isinstance(data[spec.name], dict):
                    data[spec.name].setdefault(new, training[old])
    for spec in METHODS:
        for old, _ in spec.schema_1_keys:
            training.pop(old, None)
    return data


def _moved_to(key: str) -> str:
    """Where a version-1 [training] key lives now ("" if it never was one), for the unknown-key message."""
    places = [f"[{spec.name}] {new}" for spec in METHODS for old, new in spec.schema_1_keys if old == key]
    return f"; a method's setting moved to its own section in schema_version 2: {', '.join(places)}" if places else ""


def from_dict(data: dict[str, Any], *, source: Path | None = None) -> RunConfig:
    """Build a RunConfig from parsed TOML, rejecting unknown keys and wrong types by name."""
    data = dict(data)
    version = data.pop("schema_version", None)
    if version == 1 or (version is None and _holds_schema_1_keys(data)):
        data = upgrade_schema_1(data)
    elif version not in (None, SCHEMA_VERSION):
        raise ConfigError("schema_version", version, f"this studio reads versions 1 and {SCHEMA_VERSION}",
                          source=source)
    config = RunConfig()
    hints = typing.get_type_hints(RunConfig)
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(key, value, f"unknown key (known: {', '.join(['name', *SECTIONS])})", source=source)
        if key == "name":
            config.name = _coerce("name", value, str, source)
            continue
        if not isinstance(value, dict):
            raise ConfigError(key, value, f"expected a [{key}] table", source=source)
        section_type = hints[key]
        section_hints = typing.get_type_hints(section_type)
        section = getattr(config, key)
        for sub_key, sub_value in value.items():
            full_key = f"{key}.{sub_key}"
            if sub_key not in section_hints:
                known = ", ".join(section_hints) or "none"
                moved = _moved_to(sub_key) if key == "training" else ""
                raise ConfigError(full_key, sub_value, f"unknown key (known in [{key}]: {known}){moved}",
                                  source=source)
            setattr(section, sub_key, _coerce(full_key, sub_value, section_hints[sub_key], source))
    try:
        config.validate()
    except ConfigError as error:
        if source is not None and error.source is None:
            raise ConfigError(error.key, error.value, error.reason, source=source) from None
        raise
    return config


def loads(text: str, *, source: Path | None = None) -> RunConfig:
    """Parse TOML text into a validated RunConfig."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(FILE_KEY, str(source or "<text>"), f"not valid TOML: {error}", source=source) from None
    return from_dict(data, source=source)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table, for callers that adjust it before `from_dict`; ConfigError names the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(FILE_KEY, str(path), f"cannot be read: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(FILE_KEY, str(path), f"not valid TOML: {error}", source=path) from None


def auto_eval_fraction(data: DataSettings, rows: int) -> float:
    """The eval fraction data.eval_auto gives a new run on `rows` rows; 0 when it gives none (an eval file or a
    fraction is chosen, the rule is off, or the row count is outside its range)."""
    if not data.eval_auto or data.eval_file or data.eval_fraction > 0:
        return 0.0
    return AUTO_EVAL_FRACTION if AUTO_EVAL_MIN_ROWS <= rows < AUTO_EVAL_MAX_ROWS else 0.0


def held_out_count(rows: int, fraction: float) -> int:
    """How many of `rows` rows a fraction holds out: datasets' train_test_split rounds the test share up
    (data.split.held_out_split; a test checks the two agree)."""
    return math.ceil(fraction * rows) if rows >= 2 and fraction > 0 else 0


def apply_auto_eval(config: RunConfig, rows: int) -> str | None:
    """Set data.eval_fraction by the data.eval_auto rule for a new run on `rows` rows; the one line saying so, or
    None when the rule gives nothing. The run then records the fraction, so a resume and its held-out set agree."""
    fraction = auto_eval_fraction(config.data, rows)
    if fraction <= 0:
        return None
    config.data.eval_fraction = fraction
    return f"{held_out_count(rows, fraction)} of {rows:,} rows held out for eval (automatic: a tenth of a small dataset)"


def describe_evaluation(data: DataSettings, training: TrainingSettings, rows: int | None = None) -> str:
    """When the run computes an eval loss, in one sentence: the Dataset tab's split and the Config tab's
    schedule both decide it (sft_config evaluates only with eval rows and a strategy), so both show this. With
    the row count known, the held-out rows are counted ("5 of 47 rows held out for eval")."""
    fraction = data.eval_fraction
    held = ""
    if not data.eval_file and fraction <= 0 and data.eval_auto:
        if not rows:
            return (f"No evaluation: no eval rows are chosen yet (Dataset tab, Evaluation split); a new run on "
                    f"{AUTO_EVAL_MIN_ROWS:,} to {AUTO_EVAL_MAX_ROWS - 1:,} rows holds out a tenth of them.")
        fraction = auto_eval_fraction(data, rows)
        if fraction <= 0:
            return (f"No evaluation: no eval rows are chosen (Dataset tab, Evaluation split), and {rows:,} rows are "
                    f"outside the automatic split's {AUTO_EVAL_MIN_ROWS:,} to {AUTO_EVAL_MAX_ROWS - 1:,}.")
        held = f"{held_out_count(rows, fraction)} of {rows:,} rows held out for eval (automatic). "
    elif not data.eval_file and fraction <= 0:
        return "No evaluation: no eval rows are chosen (Dataset tab, Evaluation split)."
    elif not data.eval_file and rows is not None:
        held = f"{held_out_count(rows, fraction)} of {rows:,} rows held out for eval. "
    if training.eval_strategy == "no":
        return f"{held}No evaluation: Evaluate is set to never (Config tab, Advanced)."
    if training.eval_strategy == "epoch":
        return f"{held}Evaluated after every epoch."
    return f"{held}Evaluated every {training.eval_steps} steps."


def load_config(path: Path) -> RunConfig:
    """Read a TOML config file; relative model/data paths are resolved against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(FILE_KEY, str(path), f"cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(FILE_KEY, str(path), "is not UTF-8 text") from None
    config = loads(text, source=path)
    resolve_relative_paths(config, path.parent)
    return config


def resolve_relative_paths(config: RunConfig, base: Path) -> None:
    """Make relative local paths absolute; a Hub id such as 'org/model' stays as it is if no such folder exists."""
    for section, key in (("data", "train_file"), ("data", "eval_file"), ("model", "name_or_path"),
                         ("model", "init_adapter")):
        settings = getattr(config, section)
        value = getattr(settings, key)
        if not value or Path(value).is_absolute():
            continue
        candidate = (base / value).resolve()
        if not candidate.exists() and (key == "name_or_path" or _is_hub_dataset_id(value)):
            continue  # a Hub id
        setattr(settings, key, str(candidate))


def _is_hub_dataset_id(value: str) -> bool:
    from studio.core.system.paths import looks_like_hub_id

    return looks_like_hub_id(value)


def dumps(config: RunConfig) -> str:
    """The config as TOML text (one table per section)."""
    import tomli_w  # small; only needed when writing

    return tomli_w.dumps(to_dict(config))


def save_config(config: RunConfig, path: Path) -> None:
    """Write the config as TOML, atomically (temp file + rename); an unchanged file is not rewritten.

    A failed write (a full disk) leaves the file as it was and no `.tmp` beside it, and raises the OSError.
    """
    path = Path(path)
    text = dumps(config)
    try:
        if path.read_text(encoding="utf-8") == text:
            return  # a resume with the same settings: nothing to write, even on a full disk
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_config(config: RunConfig) -> RunConfig:
    """A deep copy (configs are mutable dataclasses edited by the UI)."""
    return copy.deepcopy(config)


def config_field(section: str, name: str) -> dataclasses.Field:
    """The dataclass field behind `section.name` (its type and metadata), for forms and docs."""
    settings_type = typing.get_type_hints(RunConfig)[section]
    for f in dataclasses.fields(settings_type):
        if f.name == name:
            return f
    raise KeyError(f"{section}.{name}")


def field_help(section: str, name: str) -> str:
    """The help text of one field, for tooltips and docs."""
    return config_field(section, name).metadata.get("help", "")


def field_bounds(section: str, name: str) -> tuple[float, float]:
    """The lowest and highest value a form may offer for a number (`above` counts as the lowest); KeyError if
    the field's metadata does not bound it on both sides."""
    meta = config_field(section, name).metadata
    low = meta["min"] if "min" in meta else meta.get("above")
    if low is None or "max" not in meta:
        raise KeyError(f"{section}.{name} has no min and max in its metadata")
    return low, meta["max"]
