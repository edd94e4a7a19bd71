"""Adapter folders: the base model an adapter names (adapter_config.json), a run folder or adapter folder resolved
to the adapter, and a short PEFT-safe name for one.
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
