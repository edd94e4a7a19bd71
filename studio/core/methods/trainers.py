"""The training methods' trainer halves, by name: what `train.run` builds its trainer with."""

from __future__ import annotations

from typing import Any

from studio.core.config.settings import ConfigError
from studio.core.methods.dpo.trainer import TRAINING as _DPO
from studio.core.methods.grpo.trainer import TRAINING as _GRPO
from studio.core.methods.kto.trainer import TRAINING as _KTO
from studio.core.methods.orpo.trainer import TRAINING as _ORPO
from studio.core.methods.registry import method_names
from studio.core.methods.sft.trainer import TRAINING as _SFT
from studio.core.methods.training import MethodTraining

_TRAININGS: dict[str, type[MethodTraining]] = {
    training.__module__.split(".")[-2]: training for training in (_SFT, _DPO, _ORPO, _KTO, _GRPO)
}
"""Keyed by each trainer half's folder, which is its method's name."""


def method_training(config: Any) -> MethodTraining:
    """The trainer half of the config's method; ConfigError names training.method when there is none."""
    name = config.training.method
    if name not in _TRAININGS:
        raise ConfigError("training.method", name, f"must be one of {', '.join(method_names())}")
    return _TRAININGS[name](config)
