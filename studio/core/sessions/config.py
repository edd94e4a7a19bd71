"""The Config tab's state and decisions: `ConfigSession` holds the draft's fields (the window's one RunConfig), the
preset chosen and whether a field differs from it, the detected device, the layer names read for the model, the last
fit and its report, and works out the estimate, the fast path's line and the notes the tab shows, telling its
listeners (`ConfigChange`) after each change. Beside it: the card the estimate is compared with when there is no GPU,
the target-module shortcuts, the model shapes the estimate reads, the "Copy as command" file and line, and the
training methods' rules, kept here in one place (which settings each method shows, their words in the form, the
rewards as metric=weight entries ↔ a weight per metric). (The range of each number comes from the field's metadata:
`studio.core.config.settings.field_bounds`; the form's layout is `sessions.config_form`.)"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config.presets import (
    GPU_PRESETS, KNOB_SECTIONS, Preset, builtin_presets, load_user_presets, preset_for_gpu, save_user_preset,
)
from studio.core.config.settings import (
    ConfigError, RunConfig, copy_config, describe_evaluation, save_config,
)
from studio.core.methods.grpo.settings import parse_rewards
from studio.core.methods.registry import METHODS, method_names
from studio.core.methods.registry import method as method_spec
from studio.core.metrics.registry import METRICS, MetricError, MetricInfo, build_metric
from studio.core.models.layers import LinearModules, cached_linear_modules, detect_linear_modules
from studio.core.models.source import ModelSourceError, bundled_shapes, find_model_config
from studio.core.plan.fit import Card, DataLengths, FitPlan, context_line, cpu_estimate, longest_context, plan_fit
from studio.core.plan.speedups import FastPathPlan, capabilities_for_card, expected_compute_dtype, plan_fast_path
from studio.core.plan.vram import ATTENTION_MODULES, MLP_MODULES, ModelShape, ShapeError, VramEstimate, estimate_vram
from studio.core.sessions.continuation import continuation_note
from studio.core.sessions.draft import Change, RunDraft
from studio.core.system.gpu import GpuInfo, detect_gpu
from studio.core.system.paths import user_data_dir
from studio.core.system.units import format_bytes

__all__ = ["CPU_AGAINST", "DETECT", "GPU_ESTIMATE_TITLE", "LAYER_READ_ERRORS", "RAM_ESTIMATE_TITLE",
           "ConfigChange", "ConfigSession", "EstimateView", "LayerNames", "read_layer_names",
           "ModelShapes", "command_config_path", "comparison_preset", "context_line_within", "describe_fit",
           "describe_layers", "fast_path_line", "fit_card", "fit_preset", "fit_to_card", "memory_estimate",
           "method_data_note", "method_fields", "method_labels", "method_shows", "model_positions", "positions_warning",
           "reward_choices", "reward_entries", "reward_weights", "target_shortcut", "train_command"]


# --------------------------------------------------------------------------------------- the session

RAM_ESTIMATE_TITLE, GPU_ESTIMATE_TITLE = "RAM estimate (a CPU run)", "GPU memory estimate"
CPU_AGAINST = "available on this computer: no NVIDIA GPU, so the CPU demo trains in RAM"

DETECT = object()
"""`ConfigSession(gpu=DETECT)` (the default) reads this machine's GPU, and again before each estimate; None is a machine
without one."""
LAYER_READ_ERRORS = (ModelSourceError, ValueError, ImportError, OSError)
"""What reading a model's layer names raises for a model it cannot read: the message says why."""
READING_LAYER_NAMES = ("Reading the model's layer names… The first read after a start imports PyTorch and "
                       "transformers, which can take a minute or more on a busy machine.")
LAYER_LINE_CHARS = 72
"""The layer-names line's width: it fits beside the form's labels in the default window."""
read_layer_names = detect_linear_modules
"""The background read of a model's layer names (the tab runs it on its TaskRunner and hands back what it found)."""


def _knobs(config: RunConfig) -> tuple:
    """What a preset or a fit sets: every knob section's values."""
    return tuple(dataclasses.asdict(getattr(config, section)) for section in KNOB_SECTIONS)


@dataclass(frozen=True)
class ConfigChange:
    """What changed in the Config tab's state: some of `fields` (the draft's `draft` change), `preset`, `presets`
    (the list), `fit`, `layers`, `device`, `shape` (the model's files arrived), `message`."""

    parts: frozenset[str]
    draft: Change | None = None

    def touches(self, *parts: str) -> bool:
        return not self.parts.isdisjoint(parts)


@dataclass(frozen=True)
class EstimateView:
    """What the estimate panel and the context line show: an estimate against a limit, or why there is none ("" with
    no estimate: no model is chosen)."""

    title: str = GPU_ESTIMATE_TITLE
    estimate: VramEstimate | None = None
    unavailable: str = ""
    limit: int = 0
    against: str = ""
    source: str = ""
    context: str = ""


class ConfigSession:
    """The Config tab's state: the draft's fields (the window's one RunConfig), the preset chosen and whether a field
    differs from it, the detected device, the layer names read for the model, the last fit and its report, the
    estimate and the notes the tab shows. Listeners get a `ConfigChange` after each change, a draft edit included.

    The fit's report and the preset's name without "edited" describe the fields as they were set, so each says so
    only while that is still true."""

    def __init__(self, draft: RunDraft | None = None, *, gpu: Any = DETECT):
        self.draft = draft if draft is not None else RunDraft()
        self._refresh_gpu = gpu is DETECT
        self.gpu: GpuInfo | None = detect_gpu() if gpu is DETECT else gpu
        self.shapes = ModelShapes()
        self._layers = LayerNames()
        self.detected: LinearModules | None = None
        self.layers_text = self.layers_tip = describe_layers(None)
        self.presets: dict[str, Preset] = {}
        self.preset_key: str | None = None
        self.last_fit: FitPlan | None = None
        self._fit_report, self._fit_knobs = "", None
        self.message, self.message_is_error = "", False
        self.config_source: Callable[[], RunConfig] | None = None
        """Returns the config "Copy as command" and the notes start from instead of the draft's."""
        self.token_stats_source: Callable[[], Any] | None = None
        """Returns the Dataset tab's TokenStats (or None), which the fit covers with max_length."""
        self.rows_source: Callable[[], int | None] | None = None
        """Returns the Dataset tab's row count (None until read), for the held-out statement ("5 of 47 rows")."""
        self._listeners: list[Callable[[ConfigChange], None]] = []
        self.reload_presets()
        self.preset_key = preset_for_gpu(self.gpu).key
        self.close = self.draft.subscribe(lambda change: self._notify("fields", draft=change))

    def subscribe(self, listener: Callable[[ConfigChange], None]) -> Callable[[], None]:
        """Call `listener(change)` after every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, *parts: str, draft: Change | None = None) -> None:
        change = ConfigChange(frozenset(parts), draft)
        for listener in list(self._listeners):
            listener(change)

    # --- the fields -----------------------------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        return self.config_source() if self.config_source is not None else self.draft.config

    def current_config(self) -> RunConfig:
        return copy_config(self.config)

    def edit(self, section: str, name: str, value: Any, *, source: object | None = None) -> Change | None:
        """One field's edit, written into the draft (which tells every view, this session's listeners included)."""
        return self.draft.update(section, source=source, **{name: value})

    def set_model(self, name_or_path: str, trust_remote_code: bool, *, source: object | None = None) -> Change | None:
        """The model picker's edit: the model and whether its code is trusted, in one change."""
        return self.draft.update("model", source=source, name_or_path=name_or_path,
                                 trust_remote_code=trust_remote_code)

    def field_shown(self, section: str, name: str) -> bool:
        """Only the chosen method's own settings are shown."""
        return section not in method_names() or method_shows(self.draft.config.training.method, section)

    def field_enabled(self, section: str, name: str) -> bool:
        """A field that does nothing with the others as they are is disabled (the epochs under a max_steps...)."""
        quantization, training = self.draft.config.quantization, self.draft.config.training
        scoring = training.score_examples > 0
        return {"bnb_4bit_quant_type": quantization.mode == "4bit",
                "bnb_4bit_use_double_quant": quantization.mode == "4bit",
                "num_train_epochs": training.max_steps <= 0,
                "eval_steps": training.eval_strategy == "steps",
                "early_stopping_patience": training.eval_strategy != "no",
                "score_steps": scoring, "score_metric": scoring,
                "reward_pattern": "regex" in reward_weights(self.draft.config.grpo.rewards)}.get(name, True)

    def effective_batch(self) -> str:
        training = self.draft.config.training
        examples = training.per_device_train_batch_size * training.gradient_accumulation_steps
        return f"{examples} examples per optimiser step"

    def evaluation_summary(self) -> str:
        """What is held out for eval and when: no eval rows means no evaluation, whatever the schedule."""
        config = self.config
        return describe_evaluation(config.data, config.training, self.rows_source() if self.rows_source else None)

    def method_note(self) -> str:
        """What data the method reads, and for a continued adapter why its rate and supervised term are what
        "Continue with…" chose."""
        config = self.config
        return "\n".join(note for note in (method_data_note(config.training.method), continuation_note(config)) if note)

    def fast_path(self) -> tuple[str, str]:
        """The fast path's line (what is on here) and its tooltip (every part with its reason)."""
        config = self.config
        capabilities = capabilities_for_card(self.gpu)
        plan = plan_fast_path(config, capabilities, compute_dtype=expected_compute_dtype(config, capabilities))
        return fast_path_line(plan), plan.summary()

    # --- the device -----------------------------------------------------------------------------------------
    def set_device(self, gpu: GpuInfo | None) -> None:
        """The GPU to plan for from now on (None: a machine without one), not read again."""
        self.gpu, self._refresh_gpu = gpu, False
        self._notify("device")

    def _read_device(self) -> GpuInfo | None:
        if self.gpu is not None and self._refresh_gpu:
            self.gpu = detect_gpu(self.gpu.index) or self.gpu  # its free memory now
        return self.gpu

    def fit_card(self) -> Card:
        return fit_card(self._read_device(), self.selected_preset())

    def memory_limit(self) -> tuple[int, str]:
        """The free memory to compare with, and a phrase saying whose it is."""
        if (gpu := self._read_device()) is not None:
            return gpu.free_bytes, f"free on {gpu.name} ({format_bytes(gpu.total_bytes, style='memory')})"
        preset = comparison_preset(self.selected_preset())
        return preset.vram_bytes or 0, f"no NVIDIA GPU detected, so compared with the {preset.card} preset's card"

    # --- the estimate ---------------------------------------------------------------------------------------
    def estimate(self) -> EstimateView:
        """The estimate for where the run trains, against that memory, and the longest context that fits."""
        config = self.config
        if not (model := config.model.name_or_path):
            return EstimateView()
        shape, source = self.shapes.get(model)
        if shape is None:
            return EstimateView(unavailable=f"No estimate: {source}")
        card, positions = self.fit_card(), self.shapes.positions(model)
        estimate = memory_estimate(shape, config, card)
        if (warning := positions_warning(config, positions)) is not None:
            estimate.notes.insert(0, warning)
        on_cpu = card.device == "cpu"
        limit, against = (card.free_bytes, CPU_AGAINST) if on_cpu else self.memory_limit()
        return EstimateView(RAM_ESTIMATE_TITLE if on_cpu else GPU_ESTIMATE_TITLE, estimate, "", limit, against,
                            source, context_line_within(shape, config, card, positions))

    def model_downloaded(self) -> None:
        """A download has just put the model's files in the cache: read its shape again."""
        self.shapes.forget(self.draft.config.model.name_or_path)
        self._notify("shape")

    # --- presets --------------------------------------------------------------------------------------------
    def reload_presets(self) -> list[str]:
        """Read the presets again (built-in, then the user's); returns messages for unreadable files."""
        user, problems = load_user_presets()
        self.presets = {preset.key: preset for preset in builtin_presets()}
        self.presets.update({f"user:{preset.key}": preset for preset in user})
        if problems:
            self.say("; ".join(problems), error=True)
        self._notify("presets")
        return problems

    def selected_preset(self) -> Preset | None:
        return self.presets.get(self.preset_key)

    def preset_label(self, key: str) -> str:
        preset = self.presets[key]
        return preset.label if preset.builtin else f"{preset.label} (yours)"

    def preset_hint(self) -> tuple[str, str]:
        """The chosen preset's description, and its tooltip."""
        if (preset := self.selected_preset()) is None:
            return "", ""
        tip = preset.description
        if preset.suggested_model:
            tip += f" Sized with {preset.suggested_model}, which it suggests when no model is chosen."
        return preset.description, tip

    def show_preset(self, key: str) -> bool:
        """Show `key` as the chosen preset without applying it (the window restores the last choice); False for a
        preset that no longer exists."""
        if key not in self.presets:
            return False
        self.preset_key = key
        self._notify("preset")
        return True

    def choose_preset(self, key: str) -> None:
        """Set every knob from a preset (the model and the data stay; an empty model gets the one it was sized
        for), with the planner's memory levers for the model's shape where it is known."""
        preset = self.presets[key]
        self.preset_key = key
        config = self.current_config()
        if not config.model.name_or_path and preset.suggested_model:
            config.model.name_or_path = preset.suggested_model
        self.draft.set_config(fit_preset(preset, config, self.shapes.get(config.model.name_or_path)[0]))
        self._notify("preset")

    def preset_edited(self) -> bool:
        """Whether a field differs from what choosing the preset now would set (its box says "edited"); False while
        the model's shape is unknown."""
        preset, config = self.selected_preset(), self.draft.config
        shape = self.shapes.get(config.model.name_or_path)[0] if config.model.name_or_path else None
        return (preset is not None and shape is not None
                and _knobs(fit_preset(preset, config, shape)) != _knobs(config))

    def save_preset(self, name: str) -> Path | None:
        """Save the current knobs as a user preset and choose it; None (and the message says why) when it cannot."""
        try:
            path = save_user_preset(name, self.current_config())
        except (ConfigError, OSError) as error:
            self.say(f"Could not save the preset: {error}", error=True)
            return None
        self.reload_presets()
        self.show_preset(f"user:{path.stem}")
        self.say(f"Preset saved: {path}")
        return path

    # --- fit to this card -----------------------------------------------------------------------------------
    def fit(self) -> FitPlan | None:
        """Apply the planner's fastest settings that fit (written through the draft) and report the estimate before
        and after and why; where nothing fits, change nothing and say what would."""
        config = self.current_config()
        shape, source = self.shapes.get(config.model.name_or_path) if config.model.name_or_path else (None, "")
        if shape is None:
            self._record_fit(f"Cannot fit: {source or 'choose a model first'}")
            return None
        stats = self.token_stats_source() if self.token_stats_source is not None else None
        plan = self.last_fit = fit_to_card(shape, config, self.fit_card(), stats)
        if plan.fits:
            for section in ("quantization", "lora", "training"):  # the planner may set LoRA dropout 0 for length
                chosen = getattr(plan.config, section)
                self.draft.update(section, **{f.name: getattr(chosen, f.name) for f in dataclasses.fields(chosen)})
        self._record_fit(describe_fit(plan, config))
        return plan

    def _record_fit(self, report: str) -> None:
        self._fit_report = report
        self._fit_knobs = (self.draft.config.model.name_or_path, _knobs(self.draft.config))  # the fields after it
        self._notify("fit")

    @property
    def fit_report(self) -> str:
        """The last fit's report while the fields are still what it describes, else "" (another preset, an edit,
        another model: "Changed: max_length 256 → 228" under a field that now says 1024 would not be true)."""
        if self._fit_knobs != (self.draft.config.model.name_or_path, _knobs(self.draft.config)):
            return ""
        return self._fit_report

    # --- layer names ----------------------------------------------------------------------------------------
    def layers_request(self, *, busy: bool = False) -> tuple[str, bool] | None:
        """The (model, trust_remote_code) whose layer names must be read in the background, or None: no model,
        names known (read in this session or at an earlier start: no torch import needed), a read already `busy`,
        or a model that cannot be read (the layers line says why)."""
        model = self.draft.config.model
        if not model.name_or_path:
            self._show_layers(None)
            return None
        if (known := self._layers.known(model.name_or_path, trust_remote_code=model.trust_remote_code)) is not None:
            self._show_layers(known)
            return None
        if busy:
            return None  # one at a time; `layers_pending` says afterwards whether the model changed meanwhile
        try:
            find_model_config(model.name_or_path)
        except ModelSourceError as error:
            self._show_layers(None, f"Layer names unknown: {error}")
            return None
        self._show_layers(None, READING_LAYER_NAMES)
        return model.name_or_path, model.trust_remote_code

    def layers_read(self, model: str, trust_remote_code: bool, modules: LinearModules) -> None:
        self._layers.remember(model, modules, trust_remote_code=trust_remote_code)
        if model == self.draft.config.model.name_or_path:
            self._show_layers(modules)

    def layers_failed(self, error: BaseException) -> None:
        reason = str(error) if isinstance(error, LAYER_READ_ERRORS) else f"{type(error).__name__}: {error}"
        self._show_layers(self.detected, f"Layer names unknown: {reason}")

    def layers_pending(self) -> bool:
        """Whether the model's layer names are still unread (it changed while another model's were read)."""
        model = self.draft.config.model
        return bool(model.name_or_path) and (model.name_or_path, model.trust_remote_code) not in self._layers

    def _show_layers(self, modules: LinearModules | None, text: str = "") -> None:
        self.detected = modules
        self.layers_tip = text or describe_layers(modules)
        # An error or a notice in explicit lines, cut between words (the label clips, it does not wrap).
        self.layers_text = self.layers_tip if "\n" in self.layers_tip else textwrap.fill(
            self.layers_tip, LAYER_LINE_CHARS, break_long_words=False, break_on_hyphens=False)
        self._notify("layers")

    def set_target_shortcut(self, which: str) -> None:
        """Target modules: attention-only, attention+MLP (by the model's own names) or PEFT's all-linear."""
        self.draft.update("lora", target_modules=target_shortcut(which, self.detected))

    # --- copy as command ------------------------------------------------------------------------------------
    def copy_command(self) -> str | None:
        """Save the config to a TOML file and return `finetune-studio train FILE`; None (the message says why) for
        a config not ready to train or a file that cannot be written."""
        config = self.current_config()
        try:
            config.validate()
        except ConfigError as error:
            self.say(f"Not ready to train yet: {error}", error=True)
            return None
        path = command_config_path(config)
        try:
            save_config(config, path)
        except OSError as error:
            self.say(f"Could not save {path}: {error}", error=True)
            return None
        command = train_command(path)
        self.say(f"Copied to the clipboard: {command}")
        return command

    def say(self, text: str, *, error: bool = False) -> None:
        self.message, self.message_is_error = text, error
        self._notify("message")


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
    """metric → weight as [grpo] rewards' metric=weight entries, in the registry's order; `shown` itself (the
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
