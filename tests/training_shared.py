"""What tests/core/train/test_training.py and tests/slow/test_training_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from pathlib import Path
from studio.core.config.settings import load_config, save_config


def _config_with(demo_assets, folder: Path, **changes) -> Path:
    """The demo config with absolute paths and `section__key=value` changes, saved into `folder`."""
    config = load_config(demo_assets.config_path)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    path = folder / "config.toml"
    save_config(config, path)
    return path
