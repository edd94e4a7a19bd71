"""What the Config tab works out beyond the draft's fields: the fast path's line, the card the estimate is
compared with when there is no GPU, the target-module shortcuts and the layer names, the model shapes the
estimate reads, the "Copy as command" file and line, and the training method's rules (which settings each method
shows, the rewards as metric=weight entries ↔ a weight per metric). (The range of each number comes from the field's
metadata: `studio.core.config.settings.field_bounds`.)"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from studio.core.config.presets import GPU_PRESETS, KNOB_SECTIONS, Preset
from studio.core.config.settings import RunConfig
from studio.core.methods.grpo.settings import parse_rewards
from studio.core.methods.registry import METHODS, method_names
from studio.core.methods.registry import method as method_spec
from studio.core.metrics.registry import METRICS, MetricError, MetricInfo, build_metric
from studio.core.models.layers import LinearModules, cached_linear_modules
from studio.core.models.source import ModelSourceError, find_model_config
from studio.core.models.source import bundled_shapes
from studio.core.plan.fit import Card, DataLengths, FitPlan, context_line, cpu_estimate, longest_context, plan_fit
from studio.core.plan.speedups import FastPathPlan
from studio.core.plan.vram import ATTENTION_MODULES, MLP_MODULES, ModelShape, ShapeError, VramEstimate, estimate_vram
from studio.core.system.paths import user_data_dir
from studio.core.system.units import format_bytes

__all__ = ["CPU_AGAINST", "GPU_ESTIMATE_TITLE", "RAM_ESTIMATE_TITLE", "ConfigSession", "LayerNames",
           "ModelShapes", "command_config_path", "comparison_preset", "context_line_within", "describe_fit",
           "describe_layers", "fast_path_line", "fit_card", "fit_preset", "fit_to_card", "memory_estimate",
           "method_data_note", "method_fields", "method_labels", "method_shows", "model_positions", "positions_warning",
           "reward_choices", "reward_entries", "reward_weights", "target_shortcut", "train_command"]


# --------------------------------------------------------------------------------------- the session


def _knobs(config: RunConfig) -> tuple:
    """What a preset or a fit sets: every knob section's values."""
    return tuple(dataclasses.asdict(getattr(config, section)) for section in KNOB_SECTIONS)


@dataclass
class ConfigSession:
    """The Config tab's state beyond the draft's fields: the preset chosen and what the last "Fit to this GPU"
    said. Both describe the fields as they were set, so each says so only while that is still true: the fit's
    report while the fields hold what it was written about, the preset's name without "edited" while the fields
    hold the preset's values."""

    preset_key: str | None = None
    _fit_report: str = ""
    _fit_knobs: tuple | None = dataclasses.field(default=None, repr=False)

    def record_fit(self, report: str, config: RunConfig) -> None:
        """The report of a fit (or of why nothing was fitted), about `config`: the fields after it."""
        self._fit_report = report
        self._fit_knobs = (config.model.name_or_path, _knobs(config))

    def fit_report(self, config: RunConfig) -> str:
        """The last fit's report while the fields are still what it describes, else "" (another preset, an edit,
        another model: "Changed: max_length 256 → 228" under a field that now says 1024 would not be true)."""
        if self._fit_knobs != (config.model.name_or_path, _knobs(config)):
            return ""
        return self._fit_report

    @staticmethod
    def differs_from_preset(preset: Preset, config: RunConfig, shape: ModelShape | None) -> bool:
        """Whether a field differs from what choosing `preset` now would set (the preset's box says "edited")."""
        return _knobs(fit_preset(preset, config, shape)) != _knobs(config)


# --------------------------------------------------------------------------------------- the training method

def method_labels() -> dict[str, str]:
    """The Config tab's method list: each method's entry, in the usual order (core.methods.registry)."""
    return {spec.name: spec.label for spec in METHODS}


def method_fields() -> list[tuple[str, dataclasses.Field]]:
    """Every method's own settings as (its section, the field), in order: the Config tab builds a row for each from
    the field's metadata (label, help, range, widget) and shows only the chosen method's (method_shows)."""
    return [(spec.name, f) for spec in METHODS for f in dataclasses.fields(spec.settings)]


def method_shows(method: str, section: str) -> bool:
    """Whether the Config tab shows a method section's setting while `method` is chosen: only the method's own."""
    return section == method


def method_data_note(method: str) -> str:
    """The one line under the method choice: what data the method reads."""
    return method_spec(method).data.note if method in method_names() else ""


def reward_choices() -> list[MetricInfo]:
    """The metrics a GRPO reward can be built from, in the Evaluate tab's order."""
    return list(METRICS.values())


def reward_weights(entries: list[str]) -> dict[str, float]:
    """GRPO's rewards (`["tool_call=1.0", "exact"]`) as metric → weight; an entry that does not parse or names
    no metric is left out (the run's own check names it)."""
    try:
        parsed = parse_rewards(entries)
    except ValueError:
        return {}
    weights = {}
    for name, weight in parsed:
        try:
            key = build_metric(name, pattern="x").name  # the registry's own spelling ("tool-calls" → tool_call)
        except MetricError:
            continue
        weights[key] = weight
    return weights


def reward_entries(weights: dict[str, float], *, shown: list[str] | None = None) -> list[str]:
    """metric → weight as training.rewards' metric=weight entries, in the registry's order; `shown` itself (the
    entries as the config wrote them, "tool_call=1.0") while they still say the same."""
    if shown is not None and reward_weights(shown) == weights:
        return list(shown)
    return [f"{name}={weights[name]:g}" for name in METRICS if name in weights]


def fast_path_line(plan: FastPathPlan) -> str:
    """The one line under the Fast path box: what is on here, or why nothing is (the tooltip has every part)."""
    if not plan.enabled:
        return "off: plain transformers + PEFT + TRL"
    if applied := plan.applied:
        return "on here: " + ", ".join(speedup.name for speedup in applied)
    if missing := plan.missing_packages:
        return f"{missing[0].name} not installed (hover for how)"
    return "nothing to gain here (hover for why)"


def comparison_preset(selected: Preset | None) -> Preset:
    """Without an NVIDIA GPU the estimate is compared with the selected preset's card, or the smallest card's
    when the selected preset is not sized for one (the CPU demo, a user's)."""
    if selected is None or selected.vram_bytes is None:
        return GPU_PRESETS[0]
    return selected


def target_shortcut(which: str, detected: LinearModules | None) -> list[str]:
    """Target modules for a shortcut: "attention" or "attention+mlp" by the model's own layer names (Llama-style
    names until those are read), or PEFT's "all-linear"."""
    attention = list(detected.attention) if detected and detected.attention else list(ATTENTION_MODULES)
    mlp = list(detected.mlp) if detected and detected.mlp else list(MLP_MODULES)
    return {"attention": attention, "attention+mlp": attention + mlp, "all-linear": ["all-linear"]}[which]


def describe_layers(modules: LinearModules | None) -> str:
    """The model's linear layers by kind, one line each, or what the shortcuts use until they are read."""
    if modules is None:
        return "Shortcuts use Llama-style names until the model's own are read."
    lines = ["Linear layers in this model:"]
    for title, names in (("attention", modules.attention), ("MLP", modules.mlp), ("other", modules.other)):
        if names:
            lines.append(f"  {title}: {', '.join(names)}")
    return "\n".join(lines)


def command_config_path(config: RunConfig) -> Path:
    """Where "Copy as command" saves the config: one file per run name or model."""
    stem = config.name or Path(config.model.name_or_path.rstrip("/\\")).name or "run"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "run"
    return user_data_dir() / "configs" / f"{stem}.toml"


def train_command(path: Path, *, windows: bool = sys.platform == "win32") -> str:
    """The command line that trains a saved config headless, quoted for this platform's shell."""
    quoted = subprocess.list2cmdline([str(path)]) if windows else shlex.quote(str(path))
    return f"finetune-studio train {quoted}"


class ModelShapes:
    """The shape of each model the estimate was asked about, and the positions it knows, read once from its
    config.json (local or cached)."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[ModelShape | None, str]] = {}
        self._positions: dict[str, int | None] = {}

    def get(self, model: str) -> tuple[ModelShape | None, str]:
        """(shape, where it was read from), or (None, why it cannot be read)."""
        if model not in self._shapes:
            try:
                source = find_model_config(model)
                self._positions[model] = model_positions(source.config)
                self._shapes[model] = (ModelShape.from_config(source.config, source.name), source.description)
            except (ModelSourceError, ShapeError) as error:
                self._shapes[model] = (None, str(error))
        return self._shapes[model]

    def positions(self, model: str) -> int | None:
        """The longest sequence the model was built for (max_position_embeddings), None when its config is silent."""
        self.get(model)
        return self._positions.get(model)

    def forget(self, model: str) -> None:
        """Read it again next time (a download has just put its files in the cache)."""
        self._shapes.pop(model, None)
        self._positions.pop(model, None)


def model_positions(config: dict) -> int | None:
    """max_position_embeddings (or its older names) from a config.json, a multimodal model's text part included."""
    for section in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


# --------------------------------------------------------------------------------------- the estimate

RAM_ESTIMATE_TITLE, GPU_ESTIMATE_TITLE = "RAM estimate (a CPU run)", "GPU memory estimate"
CPU_AGAINST = "available on this computer: no NVIDIA GPU, so the CPU demo trains in RAM"


def memory_estimate(shape: ModelShape, config: RunConfig, card: Card) -> VramEstimate:
    """The estimate for where the run trains (the card "Fit to this GPU" plans for): a CPU run's RAM (float32, AdamW,
    no CUDA context), else the GPU's memory."""
    return cpu_estimate(shape, config) if card.device == "cpu" else estimate_vram(shape, config)


def context_line_within(shape: ModelShape, config: RunConfig, card: Card, positions: int | None) -> str:
    """"Longest context that fits" in one line, never longer than the positions the model knows: memory is not
    the only limit on a context."""
    longest = longest_context(shape, config, card)
    if positions is None or longest <= positions:
        return context_line(shape, config, card)
    return (f"Longest context: {positions:,} tokens, this model's own limit (max_position_embeddings); "
            f"{card.describe()} would hold {longest:,}.")


def positions_warning(config: RunConfig, positions: int | None) -> str | None:
    """A max_length beyond the positions the model knows: tokens past them get positions it never learned."""
    length = config.training.max_length
    if positions is None or length <= positions:
        return None
    return (f"max_length {length:,} is longer than the {positions:,} positions this model knows "
            f"(max_position_embeddings): set it to {positions:,} or less.")


class LayerNames:
    """The linear layer names of each model (with or without its own code) known so far: read in this session,
    or at an earlier start (kept per config.json, so no torch import is needed to show them again)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, bool], LinearModules] = {}

    def __contains__(self, key: tuple[str, bool]) -> bool:
        return key in self._known

    def known(self, model: str, *, trust_remote_code: bool) -> LinearModules | None:
        key = (model, trust_remote_code)
        if key not in self._known and (found := cached_linear_modules(model, trust_remote_code=trust_remote_code)):
            self._known[key] = found
        return self._known.get(key)

    def remember(self, model: str, modules: LinearModules, *, trust_remote_code: bool) -> None:
        self._known[(model, trust_remote_code)] = modules


# --------------------------------------------------------------------------------------- fit to this card


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is optional: the pages the OS reports free
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fit_card(gpu: object | None, selected: Preset | None, *, ram_bytes: int | None = None) -> Card:
    """What "Fit to this GPU" plans for: the detected GPU's free memory; without one, the selected preset's card (the
    one the estimate is compared with), or this computer's RAM for the CPU demo and presets not sized for a card."""
    if gpu is not None:
        return Card(int(gpu.free_bytes), "cuda", str(gpu.name))
    if selected is not None and selected.vram_bytes is not None:
        return Card(selected.vram_bytes, "cuda", f"the {selected.card} preset's card")
    return Card(ram_bytes if ram_bytes is not None else _available_ram(), "cpu", "this computer")


def _smaller_models() -> dict[str, ModelShape]:
    shapes = {}
    for name, path in bundled_shapes().items():
        try:
            shapes[name] = ModelShape.from_config(json.loads(path.read_text(encoding="utf-8")), name)
        except (OSError, ValueError):
            continue
    return shapes


def fit_to_card(shape: ModelShape, config: RunConfig, card: Card, stats: object | None = None) -> FitPlan:
    """The planner's choice for the draft's config, the Dataset tab's token lengths (a TokenStats, if measured) and
    the card, with the bundled model shapes as the smaller models it may suggest."""
    return plan_fit(shape, config, card, data=DataLengths.from_stats(stats), alternatives=_smaller_models())


def fit_preset(preset: Preset, config: RunConfig, shape: ModelShape | None) -> RunConfig:
    """A GPU preset's knobs with the planner's memory levers for the preset's card and the model's shape: gradient
    checkpointing off where it fits, the micro-batch split of the preset's effective batch, offloading only when
    needed. The preset's max_length stays (no data lengths are used). Unchanged without a shape or a card size, or
    where nothing fits."""
    applied = preset.apply(config)
    if shape is None or preset.vram_bytes is None:
        return applied
    plan = plan_fit(shape, applied, Card(preset.vram_bytes, "cuda", f"the {preset.card} preset's card"))
    return plan.config if plan.fits else applied


def describe_fit(plan: FitPlan, original: RunConfig) -> str:
    """What "Fit to this GPU" did, for the Config tab: the estimate before and after, the changes, and why."""
    before = format_bytes(plan.before.total, style="estimate")
    if not plan.fits:
        lines = [f"Nothing fits {plan.card.describe()} (now {before}); nothing was changed.", *plan.reasons,
                 "What would fit:", *(f"• {line}" for line in plan.suggestions)]
        return "\n".join(lines)
    after = format_bytes(plan.after.total, style="estimate")
    changes = plan.changes(original)
    changed = ", ".join(f"{key.split('.', 1)[1]} {_shown(old)} → {_shown(new)}" for key, old, new in changes)
    lines = [f"Fitted to {plan.card.describe()}: estimate {before} → {after}.",
             f"Changed: {changed}." if changes else "Already the fastest settings that fit: nothing changed.",
             *(f"• {reason}" for reason in plan.reasons)]
    return "\n".join(lines)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else str(value)
