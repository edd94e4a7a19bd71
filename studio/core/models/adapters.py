"""Adapter folders: the base model an adapter names (adapter_config.json), a run folder or adapter folder resolved
to the adapter, a short PEFT-safe name for one, whether an adapter fits a base (its layer sizes, read from the
safetensors header without loading a tensor), and the one function every adapter load goes through.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

from studio.core.models.source import ModelLoadError


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{config_file}: cannot be read: {error}") from None
    base = data.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{config_file}: names no base model; pass the base explicitly")
    return base


def resolve_adapter_dir(path: Path) -> Path:
    """Accept either an adapter folder or a run directory holding `adapter/`."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise ModelLoadError(f"{path}: neither an adapter folder nor a run directory with a finished adapter")


def adapter_display_name(adapter_dir: Path) -> str:
    """A short, PEFT-safe name: the run's name for `<run>/adapter`, else the folder's."""
    adapter_dir = Path(adapter_dir)
    name = adapter_dir.parent.name if adapter_dir.name == "adapter" and adapter_dir.parent.name else adapter_dir.name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "adapter"


# --------------------------------------------------------------------------------------- does it fit this base

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


class AdapterBaseMismatch(ModelLoadError):
    """The adapter was trained on a base of another shape than the one it is put on."""


def _safetensors_header(file: Path) -> dict[str, Any]:
    """The tensor names, dtypes and shapes of a safetensors file, read from its JSON header alone (the format: an
    8-byte little-endian length, then that many bytes of JSON): no tensor is loaded."""
    try:
        with open(file, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= 100_000_000:
                raise ModelLoadError(f"{file}: not a safetensors file (its header length is {length})")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{file}: cannot be read as safetensors ({error})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{file}: not a safetensors file")
    header.pop("__metadata__", None)
    return header


def adapter_layer_shapes(adapter_dir: Path) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of every layer a LoRA adapter adapts, from its safetensors header: lora_A is [r, inputs],
    lora_B is [outputs, r]. Empty when the adapter holds no safetensors file (the pickle rule speaks for those)."""
    file = Path(adapter_dir) / "adapter_model.safetensors"
    if not file.is_file():
        return {}
    inputs: dict[str, int] = {}
    outputs: dict[str, int] = {}
    for key, entry in _safetensors_header(file).items():
        match = _LORA_KEY.match(key)
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if match is None or not isinstance(shape, list) or len(shape) != 2:
            continue
        if match["which"] == "A":
            inputs[match["module"]] = int(shape[1])
        else:
            outputs[match["module"]] = int(shape[0])
    return {name: (inputs[name], outputs[name]) for name in inputs if name in outputs}


def model_layer_shapes(model: Any) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of every linear layer of a model (loaded, quantised, on the meta device, or already wrapped
    by PEFT: its LoRA layers keep the base layer's sizes and names)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shapes = {}
    for name, module in base.named_modules():
        inputs, outputs = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if isinstance(inputs, int) and isinstance(outputs, int):
            shapes[name] = (inputs, outputs)
    return shapes


def base_layer_shapes(name_or_path: str) -> dict[str, tuple[int, int]] | None:
    """The linear layers' sizes of a base, built from its config.json on the meta device (no weights, no memory);
    None when that cannot be done without running the model's own code or the network."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.core.models.source import ModelSourceError, find_model_config

    try:
        source = find_model_config(name_or_path)
    except ModelSourceError:
        return None
    values = dict(source.config)
    model_type = values.pop("model_type", None)
    if source.origin == "bundled" or "auto_map" in values or not model_type:
        return None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **values))
    except Exception:  # noqa: BLE001 - an architecture that cannot be built here is judged when it loads
        return None
    return model_layer_shapes(model)


def adapter_mismatch(adapter_dir: Path, base: str, base_shapes: dict[str, tuple[int, int]]) -> str | None:
    """Why the adapter cannot go on a base with these layers — "adapter X was trained on base Y; this base is Z" and
    the first layer that differs — or None when every adapted layer is there with the adapter's sizes."""
    adapter_dir = Path(adapter_dir)
    for module, (inputs, outputs) in sorted(adapter_layer_shapes(adapter_dir).items()):
        here = base_shapes.get(module)
        if here == (inputs, outputs):
            continue
        try:
            trained_on = adapter_base_model(adapter_dir)
        except ModelLoadError:
            trained_on = "another base"
        detail = (f"this base has no layer {module}" if here is None else
                  f"{module} has {inputs} inputs and {outputs} outputs in the adapter, {here[0]} and {here[1]} in "
                  "this base")
        return f"adapter {adapter_dir} was trained on base {trained_on}; this base is {base} ({detail})"
    return None


def check_adapter_fits(adapter_dir: Path, base: str) -> None:
    """AdapterBaseMismatch before a base is loaded, when its config.json says the adapter cannot fit it."""
    shapes = base_layer_shapes(base)
    if shapes is not None and (reason := adapter_mismatch(adapter_dir, base, shapes)) is not None:
        raise AdapterBaseMismatch(reason)


# --------------------------------------------------------------------------------------- loading


def load_adapter(model: Any, adapter_dir: Path, *, allow_pickle: bool, base: str, adapter_name: str = "default",
                 is_trainable: bool = False) -> Any:
    """Every load of a LoRA adapter: the weights rule (safetensors, or a pickle only when allowed), then the adapter
    against the loaded base's layers, then PEFT. Returns the PeftModel (a new one, or `model` with one adapter
    more). `base` names the base in messages."""
    from studio.core.models.weights import check_weights

    adapter_dir = Path(adapter_dir)
    check_weights(adapter_dir, allow_pickle=allow_pickle)
    if (reason := adapter_mismatch(adapter_dir, base, model_layer_shapes(model))) is not None:
        raise AdapterBaseMismatch(reason)
    try:
        if hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
            model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=is_trainable)
            return model
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name,
                                         is_trainable=is_trainable)
    except pickle.UnpicklingError as error:  # an allowed pickle that names code
        from studio.core.models.weights import unpickling_refused

        raise unpickling_refused(adapter_dir, error) from None
    except RuntimeError as error:  # what the shapes above did not foresee (another layer kind): still one line
        if "size mismatch" not in str(error):
            raise
        raise AdapterBaseMismatch(f"adapter {adapter_dir} was trained on base {adapter_base_model(adapter_dir)}; "
                                  f"this base is {base} (their layer sizes differ)") from None
