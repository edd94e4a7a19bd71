"""Checks of a run against its base model's files, made before a run folder exists, without loading weights.

A model folder whose weights are pickles only, an architecture transformers does not know, or LoRA target
modules that name no layer of the model used to fail only once the weights had loaded, as a crashed run in
the history. Here they are a ConfigError naming the key, from `check_sources`, which the CLI and
the window call before they make a run folder. The layer names come from the architecture built on the meta
device (no memory, no weights), as the Config tab lists them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from studio.core.config.settings import ConfigError, RunConfig

TRAIN_OPT_IN = "model.allow_pickle = true (train --allow-pickle)"
"""How a run allows pickle weights, as a refusal names it."""


def check_sources(config: RunConfig) -> None:
    """ConfigError naming the key when the model or a data file the run needs is missing or cannot be read, or
    when the model cannot train as configured (pickle-only weights, an unknown architecture, target modules
    that name no layer: `check_model`).

    Checked before a run folder is made, so a typo costs a message rather than a failed run in the history.
    A Hub id passes when it is in the HF cache or the Hub can be reached (the run fetches it then).
    """
    from studio.core.data.issues import DataError
    from studio.core.data.sources import resolve_source
    from studio.core.models.source import missing_local_model, unreachable_hub_model
    from studio.core.models.trained_base import needs_remote_code

    name = config.model.name_or_path
    if (reason := missing_local_model(name) or unreachable_hub_model(name)) is not None:
        raise ConfigError("model.name_or_path", name, reason)
    if not config.model.trust_remote_code and needs_remote_code(config.model.name_or_path):
        raise ConfigError("model.trust_remote_code", False,
                          f"{config.model.name_or_path} needs its own Python code to load (auto_map in its "
                          "config); set it to true only if you trust the model's author")
    for key in ("train_file", "eval_file"):
        value = getattr(config.data, key)
        if not value:
            continue
        try:
            resolve_source(value)  # the reader's own rule: a missing file, a FIFO or a device is refused here
        except DataError as error:
            reason = str(error).removeprefix(f"{Path(value).expanduser()}: ")
            raise ConfigError(f"data.{key}", value, reason) from None
    check_model(config)  # weights, architecture and target modules, read from the model's files only
    check_init_adapter_fits(config)


def check_model(config: RunConfig) -> None:
    """ConfigError naming the key when the local (or cached) base model cannot train with this config."""
    folder = _model_folder(config.model.name_or_path)
    if folder is None:
        return  # a Hub id not downloaded yet: checked when the run fetches it
    key, value = "model.name_or_path", config.model.name_or_path
    _check_weights(folder, config)
    try:
        hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(key, value, f"its config.json cannot be read ({error})") from None
    if not isinstance(hf_config, dict):
        raise ConfigError(key, value, "its config.json does not hold a JSON object")
    if "auto_map" in hf_config:
        return  # the model ships its own code: model.trust_remote_code decides how (and whether) it loads
    stat = (folder / "config.json").stat()
    layers = _layer_names(str(folder), stat.st_mtime_ns, stat.st_size)
    if isinstance(layers, str):
        raise ConfigError(key, value, layers)
    _check_target_modules(config, *layers)


def _model_folder(name_or_path: str) -> Path | None:
    """The folder holding the model's config.json: the local folder, or the cached Hub snapshot."""
    from studio.core.models.source import cached_snapshot

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path if (path / "config.json").is_file() else None
    return cached_snapshot(name_or_path)


def _check_weights(folder: Path, config: RunConfig) -> None:
    """The one weights rule (core.models.weights) as a ConfigError: safetensors, or pickles with model.allow_pickle."""
    from studio.core.models.source import ModelLoadError
    from studio.core.models.weights import check_weights, safetensors_files

    try:
        check_weights(folder, allow_pickle=config.model.allow_pickle, opt_in=TRAIN_OPT_IN,
                      require=Path(config.model.name_or_path).expanduser().is_dir())
    except ModelLoadError as error:
        raise ConfigError("model.name_or_path", config.model.name_or_path, str(error)) from None
    if Path(config.model.name_or_path).expanduser().is_dir() or safetensors_files(folder):
        return
    from studio.core.models.source import hub_unreachable_reason

    # A cached snapshot may hold only the config until the run downloads the weights: offline, it never will.
    if (why := hub_unreachable_reason()) is not None:
        raise ConfigError("model.name_or_path", config.model.name_or_path,
                          f"its weights are not in the Hugging Face cache (only its config is) and the Hub cannot be "
                          f"reached ({why}) to fetch them; download it first where the Hub can be reached")


def check_init_adapter_fits(config: RunConfig) -> None:
    """ConfigError naming model.init_adapter when the adapter to continue from is a pickle without the opt-in, or
    was trained on a base whose layers differ from this run's (read from the safetensors header and config.json:
    nothing loads). An init_adapter that is missing or not an adapter is left to its own checks."""
    from studio.core.models.adapters import check_adapter_fits, resolve_adapter_dir
    from studio.core.models.source import ModelLoadError
    from studio.core.models.weights import check_weights

    value = config.model.init_adapter
    if not value:
        return
    try:
        adapter_dir = resolve_adapter_dir(Path(value).expanduser())
    except ModelLoadError:
        return
    try:
        check_weights(adapter_dir, allow_pickle=config.model.allow_pickle, opt_in=TRAIN_OPT_IN)
        check_adapter_fits(adapter_dir, config.model.name_or_path)
    except ModelLoadError as error:
        raise ConfigError("model.init_adapter", value, str(error)) from None


@functools.lru_cache(maxsize=8)
def _layer_names(folder: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[str, ...]] | str:
    """(every module name, the linear layers' short names) of the architecture, or the reason it cannot be
    built. Cached per config.json: the CLI checks before the run folder exists and the run checks again."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.core.models.layers import _group_linear_modules

    values = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    model_type = values.pop("model_type", None)
    if not model_type:
        return "its config.json names no model_type, so the architecture is unknown"
    try:
        hf_config = AutoConfig.for_model(model_type, **values)
    except ValueError:
        return (f"unknown architecture: its config.json has model_type {model_type!r}, which transformers "
                f"{transformers.__version__} does not know (a newer transformers may: pip install -U transformers)")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
    except ValueError as error:
        return (f"model_type {model_type!r} is not a causal language model this studio can fine-tune "
                f"({_first_line(error)})")
    except Exception as error:  # noqa: BLE001 - whatever the config holds, the run would fail the same way
        return f"the architecture cannot be built from its config.json ({type(error).__name__}: {_first_line(error)})"
    return tuple(name for name, _ in model.named_modules() if name), _group_linear_modules(model).all


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _matches(target: str, name: str) -> bool:
    """PEFT's rule for a list of target modules: the full module name, or its ending after a dot."""
    return name == target or name.endswith("." + target)


def _check_target_modules(config: RunConfig, names: tuple[str, ...], linear: tuple[str, ...]) -> None:
    """Every named target must match a layer: PEFT refuses only when none does, and silently adapts fewer
    layers than asked when a name has a typo."""
    targets = config.lora.target_modules
    if targets == ["all-linear"]:
        return
    unmatched = [t for t in targets if not any(_matches(t, name) for name in names)]
    if not unmatched:
        return
    quoted = ", ".join(repr(t) for t in unmatched)
    raise ConfigError("lora.target_modules", targets,
                      f"{quoted} match{'es' if len(unmatched) == 1 else ''} no layer of this model; its linear "
                      f"layers are {', '.join(linear) or 'unknown'} (or use 'all-linear')")
