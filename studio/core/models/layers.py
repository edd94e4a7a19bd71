"""A model's linear layer names (what LoRA's target_modules can name), grouped as attention and MLP: read from its
config.json by building the model on the meta device, and kept per config in the user data cache, so the Config
tab knows them at the next start without importing torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.models.source import (
    ModelConfigSource,
    ModelSourceError,
    find_model_config,
)

# --------------------------------------------------------------------------------------- linear layers


@dataclass(frozen=True)
class LinearModules:
    """The names PEFT can target in a model, grouped for the Config tab's shortcuts."""

    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.attention + self.mlp + self.other


def linear_modules_from_config(config: dict[str, Any], *, trust_remote_code: bool = False) -> LinearModules:
    """Instantiate the architecture on the meta device (no memory, no weights) and list its linear layers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ModelSourceError("config.json has no model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **values)
    except ValueError as error:
        raise ModelSourceError(f"unknown architecture {model_type!r}: {error}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    return _group_linear_modules(model)


def _layer_names_cache() -> Path:
    from studio.core.system.paths import user_data_dir

    return user_data_dir() / "cache" / "layer-names.json"


def _layer_names_key(config: dict[str, Any], trust_remote_code: bool) -> str:
    import hashlib

    payload = json.dumps({"config": config, "trust_remote_code": trust_remote_code}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached_linear_modules(name_or_path: str, *, trust_remote_code: bool = False) -> LinearModules | None:
    """The layer names found earlier for a model with this very config.json, without importing torch: the
    first read after a start imports PyTorch and transformers, which on a busy 2-core machine took minutes."""
    try:
        source = find_model_config(name_or_path)
        entry = json.loads(_layer_names_cache().read_text(encoding="utf-8")).get(
            _layer_names_key(source.config, trust_remote_code))
    except (ModelSourceError, OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict):
        return None
    try:
        return LinearModules(*(tuple(str(n) for n in entry[k]) for k in ("attention", "mlp", "other")))
    except (KeyError, TypeError):
        return None


def _remember_linear_modules(config: dict[str, Any], trust_remote_code: bool, modules: LinearModules) -> None:
    cache = _layer_names_cache()
    try:
        known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        if not isinstance(known, dict):
            known = {}
        known[_layer_names_key(config, trust_remote_code)] = {
            "attention": list(modules.attention), "mlp": list(modules.mlp), "other": list(modules.other)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = cache.with_suffix(".tmp")
        staging.write_text(json.dumps(known), encoding="utf-8")
        os.replace(staging, cache)
    except (OSError, ValueError):
        pass  # a cache: the next start reads the names again


def detect_linear_modules(name_or_path: str, *, trust_remote_code: bool = False) -> LinearModules:
    """The linear layer names of a local/cached/bundled model, read from its config.json only (and remembered,
    see cached_linear_modules)."""
    cached = cached_linear_modules(name_or_path, trust_remote_code=trust_remote_code)
    if cached is not None:
        return cached
    source = find_model_config(name_or_path)
    modules = _read_linear_modules(source, trust_remote_code)
    if not (trust_remote_code and "auto_map" in source.config):  # a model's own code may change under one config
        _remember_linear_modules(source.config, trust_remote_code, modules)
    return modules


def _read_linear_modules(source: ModelConfigSource, trust_remote_code: bool) -> LinearModules:
    if source.origin != "bundled" and trust_remote_code and "auto_map" in source.config:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        hf_config = AutoConfig.from_pretrained(str(source.path.parent), trust_remote_code=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=True)
        return _group_linear_modules(model)
    return linear_modules_from_config(source.config, trust_remote_code=trust_remote_code)


def _group_linear_modules(model: Any) -> LinearModules:
    import torch

    head = model.get_output_embeddings()
    groups: dict[str, list[str]] = {"attention": [], "mlp": [], "other": []}
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        parent, _, leaf = path.rpartition(".")
        parent = parent.lower()
        if "attn" in parent or "attention" in parent:
            group = "attention"
        elif "mlp" in parent or "feed_forward" in parent or "ffn" in parent:
            group = "mlp"
        else:
            group = "other"
        if leaf not in groups[group]:
            groups[group].append(leaf)
    return LinearModules(tuple(groups["attention"]), tuple(groups["mlp"]), tuple(groups["other"]))
