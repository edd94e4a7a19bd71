"""What the Config tab works out beyond the draft's fields: the fast path's line, the card the estimate is
compared with when there is no GPU, the target-module shortcuts and the layer names, the model shapes the
estimate reads, and the "Copy as command" file and line. (The range of each number comes from the field's
metadata: `studio.core.config.settings.field_bounds`.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from studio.core.config.presets import GPU_PRESETS, Preset
from studio.core.config.settings import RunConfig
from studio.core.models.layers import LinearModules, cached_linear_modules
from studio.core.models.source import ModelSourceError, find_model_config
from studio.core.plan.speedups import FastPathPlan
from studio.core.plan.vram import ATTENTION_MODULES, MLP_MODULES, ModelShape, ShapeError
from studio.core.system.paths import user_data_dir

__all__ = ["LayerNames", "ModelShapes", "command_config_path", "comparison_preset", "describe_layers", "fast_path_line",
           "target_shortcut", "train_command"]


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
    """The shape of each model the estimate was asked about, read once from its config.json (local or cached)."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[ModelShape | None, str]] = {}

    def get(self, model: str) -> tuple[ModelShape | None, str]:
        """(shape, where it was read from), or (None, why it cannot be read)."""
        if model not in self._shapes:
            try:
                source = find_model_config(model)
                self._shapes[model] = (ModelShape.from_config(source.config, source.name), source.description)
            except (ModelSourceError, ShapeError) as error:
                self._shapes[model] = (None, str(error))
        return self._shapes[model]

    def forget(self, model: str) -> None:
        """Read it again next time (a download has just put its files in the cache)."""
        self._shapes.pop(model, None)


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
