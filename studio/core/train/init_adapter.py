"""Continuing from an earlier run's adapter (model.init_adapter): the usual order SFT, then preference tuning.

The adapter learnt its corrections against the base *as that run loaded it* (core.models.trained_base): a QLoRA
adapter put on a 16-bit base, or the other way round, is a different model. So the run must load the base the way
the earlier run did, and a config whose quantisation differs is refused, naming the key, before anything loads.
The adapter is then loaded trainable (PEFT's `PeftModel.from_pretrained(..., is_trainable=True)`) instead of a new
LoraConfig. TRL's DPO, KTO and GRPO trainers, given a PEFT model and no reference model, copy its adapter into a
frozen "ref" adapter and compute the reference pass with it: the reference is the SFT model itself, at the cost of
one more adapter's weights (ORPO needs no reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config.settings import ConfigError, RunConfig
from studio.core.models.trained_base import TrainedBase

KEY = "model.init_adapter"
REFERENCE_ADAPTER = "ref"
"""The name TRL gives the frozen copy of a pretrained adapter that serves as the reference model."""


@dataclass(frozen=True)
class InitAdapter:
    """The adapter a run continues from, and how its base was loaded when it was trained."""

    adapter_dir: Path
    trained: TrainedBase

    def describe(self, method: str) -> str:
        """The log line: which adapter, on which base, and which reference the method compares against."""
        from studio.core.methods.registry import method as method_spec

        where = f"Continuing from the adapter {self.adapter_dir} (trained on the {self.trained.describe()} base)"
        reference = method_spec(method).reference  # which frozen copy, if any, the method compares against
        return f"{where}; {reference}" if reference else where


def adapter_folder(value: str) -> Path:
    """A run folder or an adapter folder → the adapter folder (holding adapter_config.json); ConfigError if none."""
    from studio.core.runs.store import RunDirectory

    path = Path(value).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    run_adapter = RunDirectory(path).adapter_dir
    if (run_adapter / "adapter_config.json").is_file():
        return run_adapter
    if not path.exists():
        raise ConfigError(KEY, value, "no such folder")
    raise ConfigError(KEY, value, "neither an adapter folder (adapter_config.json) nor a run folder with a finished "
                                  "adapter (adapter/adapter_config.json)")


def resolve_init_adapter(config: RunConfig) -> InitAdapter | None:
    """The adapter to continue from (None for a new adapter), checked against this run's loading."""
    value = config.model.init_adapter
    if not value:
        return None
    adapter_dir = adapter_folder(value)
    trained = TrainedBase.of_adapter(adapter_dir)
    if trained.known:
        q = config.quantization
        wanted = TrainedBase(base=trained.base, quantization=q.mode, quant_type=q.bnb_4bit_quant_type,
                             double_quant=q.bnb_4bit_use_double_quant)
        if wanted.describe() != trained.describe():
            raise ConfigError(KEY, value, f"its adapter was trained on the {trained.describe()} base, and this run "
                                          f"loads it {wanted.describe()} (quantization.mode = {q.mode!r}): an adapter "
                                          "continues only on the weights it learnt against; set [quantization] as "
                                          "that run had it")
    return InitAdapter(adapter_dir=adapter_dir, trained=trained)


def load_trainable_adapter(model: Any, init: InitAdapter, *, allow_pickle: bool = False, base: str = "") -> Any:
    """The base wrapped with the earlier adapter, its LoRA weights trainable (named "default", as a new one); through
    the one adapter load (core.models.adapters: the weights rule, the layer sizes)."""
    from studio.core.models.adapters import load_adapter

    return load_adapter(model, init.adapter_dir, allow_pickle=allow_pickle, base=base, is_trainable=True)


def trained_adapter_names(model: Any) -> list[str] | None:
    """The adapters to save at the end: the trained one only, not TRL's frozen reference copy (None = all)."""
    names = list(getattr(model, "peft_config", {}) or {})
    if REFERENCE_ADAPTER not in names:
        return None
    return [name for name in names if name != REFERENCE_ADAPTER]
