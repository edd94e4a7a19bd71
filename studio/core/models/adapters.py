"""Talking to a base model with adapters: the same chat template as training, replies streamed.

The tokenizer (and so the chat template) is taken from the adapter folder when it has one: the
studio saves the template a run trained with beside its adapter, so chat renders prompts exactly
as training did.

The base is loaded as the first adapter's run loaded it (trained_base): a QLoRA adapter answers
on the same 4-bit weights it learned against.

One copy of the base weights serves every adapter: adapters are loaded side by side into one
`PeftModel`, `set_adapter` switches between them and `disable_adapter()` gives the base model's
own answer (compare mode) — nothing is reloaded. Generations on one model never overlap (a lock),
since switching adapters while a reply is being generated would change it midway.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
