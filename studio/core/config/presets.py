"""Ready-made configs: the CPU demo, one preset per common GPU memory size, and the user's own.

The CPU demo preset is tuned so the offline demo model memorises its ten answers in well under
three minutes on two CPU cores. The GPU presets are QLoRA settings sized with `studio.core.plan.vram` so
that their suggested model fits the card with room to spare (tests check it). A preset sets the
knobs — quantisation, LoRA and training — and never the model or the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from studio.core.config.settings import (
    METHOD_SECTIONS,
    ConfigError,
    RunConfig,
    copy_config,
    from_dict,
    read_toml,
    to_dict,
)
from studio.core.system.paths import safe_name, user_data_dir

if TYPE_CHECKING:
    from studio.core.system.demo import DemoAssets
    from studio.core.system.gpu import GpuInfo

GIB = 1024**3
KNOB_SECTIONS = ("quantization", "lora", "training", *METHOD_SECTIONS)
"""The parts of a config a preset sets (each method's own settings too); the model and the data stay the user's."""


def cpu_demo_config(model_dir: Path | str, train_file: Path | str) -> RunConfig:
    """The demo run: the tiny demo model, QLoRA (NF4 + double quant) on CPU, short and deterministic."""
    config = RunConfig(name="demo")
    config.model.name_or_path = str(model_dir)
    config.data.train_file = str(train_file)
    config.quantization.mode = "4bit"
    config.lora.r = 16
    config.lora.lora_alpha = 32
    config.lora.lora_dropout = 0.0
    t = config.training
    t.learning_rate = 3e-3
    t.num_train_epochs = 1.0
    t.max_steps = 60
    t.per_device_train_batch_size = 2
    t.gradient_accumulation_steps = 1
    t.max_length = 256
    t.lr_scheduler_type = "constant_with_warmup"
    t.warmup_ratio = 0.05
    t.optim = "adamw_torch"
    t.gradient_checkpointing = False  # the demo model is tiny; recomputation would only cost time
    t.logging_steps = 1
    t.save_steps = 20
    t.save_total_limit = 2
    return config


def write_demo_config(assets: "DemoAssets") -> Path:
    """Write the demo's config beside it, with paths relative to it so the folder can be moved."""
    from studio.core.config.settings import save_config

    config = cpu_demo_config(assets.model_dir.relative_to(assets.root), assets.dataset_path.relative_to(assets.root))
    save_config(config, assets.config_path)
    return assets.config_path


# --------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A named set of knob values for one kind of machine."""

    key: str
    label: str
    description: str
    vram_bytes: int | None
    """The card memory the preset is sized for; None for the CPU demo."""
    suggested_model: str = ""
    """A Hub id whose shape the preset was sized with (and which it suggests when no model is chosen)."""
    builtin: bool = True
    _apply: Callable[[RunConfig], None] | None = dataclasses.field(default=None, repr=False, compare=False)
    path: Path | None = None
    """The TOML file of a user preset."""
    card: str = ""
    """The card memory in words ("8 GB"), which the label starts with; empty for the CPU demo and user presets."""
    methods: str = ""
    """Which training methods fit the card with the preset's model, in one line."""

    def apply(self, config: RunConfig) -> RunConfig:
        """A copy of `config` with this preset's knobs; the model and data are kept."""
        result = copy_config(config)
        if self._apply is not None:
            self._apply(result)
        return result

    def build(self, model: str | Path, train_file: str | Path) -> RunConfig:
        """A complete config: this preset's knobs for a model and a training file."""
        config = RunConfig()
        config.model.name_or_path = str(model)
        config.data.train_file = str(train_file)
        return self.apply(config)


def _copy_knobs(source: RunConfig, target: RunConfig) -> None:
    for section in KNOB_SECTIONS:
        setattr(target, section, copy_config(getattr(source, section)))


def _apply_cpu_demo(config: RunConfig) -> None:
    # Take the demo's knobs from cpu_demo_config itself, so tuning the demo tunes this preset.
    _copy_knobs(cpu_demo_config(config.model.name_or_path, config.data.train_file), config)


def _qlora(*, r: int, batch: int, accumulation: int, max_length: int) -> Callable[[RunConfig], None]:
    def apply(config: RunConfig) -> None:
        defaults = RunConfig()
        config.quantization = defaults.quantization  # 4-bit NF4, double quant, bf16/fp16 compute
        config.quantization.mode = "4bit"
        lora = config.lora = defaults.lora
        lora.r, lora.lora_alpha, lora.lora_dropout = r, 2 * r, 0.05
        lora.target_modules = ["all-linear"]
        t = config.training = defaults.training
        t.learning_rate = 2e-4
        t.num_train_epochs = 3.0
        t.max_steps = -1
        t.per_device_train_batch_size = batch
        t.gradient_accumulation_steps = accumulation
        t.max_length = max_length
        t.lr_scheduler_type = "cosine"
        t.warmup_ratio = 0.03
        t.gradient_checkpointing = True
        t.optim = "paged_adamw_8bit"
        for section in METHOD_SECTIONS:  # each method's own settings at their defaults, as the training section
            setattr(config, section, getattr(defaults, section))
    return apply


CPU_DEMO = Preset(
    "cpu-demo", "CPU demo", "The offline demo: a tiny model, QLoRA on the CPU, a minute or two. Methods: sft, dpo, "
    "orpo, kto and grpo all run (grpo generates slowly on a CPU).", None,
    _apply=_apply_cpu_demo, methods="sft, dpo, orpo, kto and grpo all run (grpo generates slowly on a CPU)",
)


def _gpu_preset(key: str, card: str, examples: str, description: str, vram_bytes: int, suggested_model: str,
                apply: Callable[[RunConfig], None], methods: str) -> Preset:
    # The methods note ends the description, which the Config tab shows beside the preset.
    return Preset(key, f"{card} — {examples}", f"{description} Methods: {methods}.", vram_bytes, suggested_model,
                  _apply=apply, card=card, methods=methods)


# DPO, KTO and ORPO run a chosen and a rejected reply (or a reply and its reference pass) through the model per
# example: about twice SFT's activations at the same length. GRPO samples num_generations replies per prompt with
# the same model (the KV cache in the VRAM estimate) and trains on each. The notes are that rule of thumb, not
# measurements on these cards: `finetune-studio estimate` sizes a config (GRPO's generation included).
_ALL_METHODS = "sft, dpo, orpo, kto and grpo fit"


GPU_PRESETS = (
    _gpu_preset("8gb", "8 GB", "RTX 4060, 3070, 2080",
                "QLoRA for 1–4B models at 1024 tokens (7–8B models only with shorter examples).", 8 * GIB,
                "meta-llama/Llama-3.2-3B-Instruct", _qlora(r=16, batch=1, accumulation=8, max_length=1024),
                "sft; dpo, orpo and kto with shorter examples (two replies per example); grpo with 1–3B models and "
                "short replies"),
    _gpu_preset("12gb", "12 GB", "RTX 3060 12 GB, 4070",
                "QLoRA for 7–8B models at 2048 tokens.", 12 * GIB,
                "meta-llama/Llama-3.1-8B-Instruct", _qlora(r=16, batch=1, accumulation=8, max_length=2048),
                "sft; dpo, orpo and kto with shorter examples; grpo with 1–3B models, or 8B with short replies"),
    _gpu_preset("16gb", "16 GB", "RTX 4060 Ti 16 GB, 4080",
                "QLoRA for 7–8B models at 2048 tokens, two examples per step, rank 32.", 16 * GIB,
                "meta-llama/Llama-3.1-8B-Instruct", _qlora(r=32, batch=2, accumulation=4, max_length=2048),
                "sft; dpo, orpo and kto at batch size 1; grpo with 8B models and short replies"),
    _gpu_preset("24gb", "24 GB+", "RTX 3090, 4090, A5000",
                "QLoRA for 7–8B models at 4096 tokens, two examples per step, rank 64.", 24 * GIB,
                "meta-llama/Llama-3.1-8B-Instruct", _qlora(r=64, batch=2, accumulation=4, max_length=4096),
                f"{_ALL_METHODS} with 8B models (dpo, orpo and kto at batch size 1 for long examples)"),
)


def builtin_presets() -> list[Preset]:
    """CPU demo first, then the GPU presets by card size."""
    return [CPU_DEMO, *GPU_PRESETS]


def preset_for_gpu(gpu: "GpuInfo | None") -> Preset:
    """The built-in preset for a detected card (None: no NVIDIA GPU → the CPU demo)."""
    if gpu is None:
        return CPU_DEMO
    chosen = GPU_PRESETS[0]
    for preset in GPU_PRESETS:
        # A card reports a little less than its nominal size (e.g. 8188 MiB for "8 GB").
        if preset.vram_bytes is not None and gpu.total_bytes >= 0.9 * preset.vram_bytes:
            chosen = preset
    return chosen


# --------------------------------------------------------------------------------------- user presets


def user_presets_dir() -> Path:
    return user_data_dir() / "presets"


def save_user_preset(name: str, config: RunConfig) -> Path:
    """Save the knobs of `config` as a user preset; returns the TOML file."""
    import tomli_w

    if not name.strip():
        raise ConfigError("preset name", name, "give the preset a name")
    data = to_dict(config)
    payload: dict[str, Any] = {"preset": {"label": name.strip()}, "schema_version": data["schema_version"]}
    payload.update({section: data[section] for section in KNOB_SECTIONS if section in data})
    folder = user_presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_name(name, 'preset').lower()}.toml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(payload), encoding="utf-8")
    tmp.replace(path)
    return path


def load_user_preset(path: Path) -> Preset:
    """Read one user preset file; raises ConfigError naming the file and the key."""
    path = Path(path)
    data = read_toml(path)
    meta = data.pop("preset", {})
    version = {"schema_version": data.pop("schema_version")} if "schema_version" in data else {}
    label = str(meta.get("label") or path.stem) if isinstance(meta, dict) else path.stem
    unknown = sorted(set(data) - set(KNOB_SECTIONS))
    if unknown:
        raise ConfigError(unknown[0], data[unknown[0]], f"a preset holds only {', '.join(KNOB_SECTIONS)}",
                          source=path)
    # Validate types and ranges with the config's own rules; the model and data are placeholders.
    knobs = from_dict({**version, "model": {"name_or_path": "-"}, "data": {"train_file": "-"}, **data}, source=path)

    def apply(config: RunConfig) -> None:
        _copy_knobs(knobs, config)

    return Preset(safe_name(path.stem, "preset").lower(), label, f"Your preset ({path.name})", None, builtin=False, _apply=apply,
                  path=path)


def load_user_presets() -> tuple[list[Preset], list[str]]:
    """Every readable user preset, and one message per file that could not be read."""
    presets, problems = [], []
    folder = user_presets_dir()
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        try:
            presets.append(load_user_preset(path))
        except ConfigError as error:
            problems.append(str(error))
    return presets, problems
