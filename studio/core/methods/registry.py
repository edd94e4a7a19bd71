"""The training methods' settings halves, in their usual order: what the config, the sessions (and through them
the tabs), the memory estimate and the presets ask about a method. No torch, transformers or TRL here."""

from __future__ import annotations

from typing import Any

from studio.core.methods.dpo.settings import METHOD as _DPO
from studio.core.methods.grpo.settings import METHOD as _GRPO
from studio.core.methods.kto.settings import METHOD as _KTO
from studio.core.methods.orpo.settings import METHOD as _ORPO
from studio.core.methods.sft.settings import METHOD as _SFT
from studio.core.methods.spec import DataShape, LivePlot, MethodSpec, SettingsProblem

__all__ = ["METHODS", "DataShape", "LivePlot", "MethodSpec", "SettingsProblem", "all_plots", "continue_methods",
           "default_method", "method", "method_choices_help", "method_names", "method_of", "plot_of"]

METHODS: tuple[MethodSpec, ...] = (_SFT, _DPO, _ORPO, _KTO, _GRPO)
"""The usual order: SFT first, then a preference method from its adapter."""

_BY_NAME = {spec.name: spec for spec in METHODS}


def method_names() -> tuple[str, ...]:
    """training.method's choices, in order."""
    return tuple(_BY_NAME)


def default_method() -> str:
    """A new config's method: the first (supervised), which every other continues from."""
    return METHODS[0].name


def method(name: str) -> MethodSpec:
    """The method called `name`; KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown training method {name!r} (known: {', '.join(_BY_NAME)})") from None


def method_of(config: Any) -> MethodSpec:
    """The method a config trains with (training.method)."""
    return method(config.training.method)


def continue_methods() -> tuple[MethodSpec, ...]:
    """The Runs view's 'Continue with…' menu, in order."""
    return tuple(spec for spec in METHODS if spec.continue_label)


def method_choices_help() -> str:
    """training.method's help, from each method's own sentence."""
    sentences = [spec.help for spec in METHODS]
    return ("How the adapter learns: " + ", ".join(sentences[:-1]) + " or " + sentences[-1] + ". Each method's own "
            "settings are in its section ([dpo], [grpo], …). The usual order is sft first, then a preference method "
            "from its adapter.")


def plot_of(key: str, name: str | None = None) -> LivePlot | None:
    """The live plot that draws a logged metric key: among `name`'s plots, or every method's."""
    specs = (method(name),) if name else METHODS
    for spec in specs:
        for plot in spec.plots:
            if plot.matches(key):
                return plot
    return None


def all_plots() -> tuple[LivePlot, ...]:
    """Every method's live plots once each, in the methods' order (a run's events name no method)."""
    seen: dict[str, LivePlot] = {}
    for spec in METHODS:
        for plot in spec.plots:
            seen.setdefault(plot.title, plot)
    return tuple(seen.values())
