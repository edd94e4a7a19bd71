"""What the window keeps between launches and offers at the first: the last settings, the offline demo, and the
documents its Help menu opens. Qt-free, so the rule for each is stated once and tested without a window."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from studio.core.config.settings import RunConfig, save_config
from studio.core.system.paths import user_data_dir

LAST_CONFIG_NAME = "last-config.toml"


def last_config_path() -> Path:
    """Where the settings the window shows are kept for the next launch."""
    return user_data_dir() / LAST_CONFIG_NAME


def keep_settings(config: RunConfig) -> None:
    """Keep the settings for the next launch (OSError when they cannot be written)."""
    save_config(config, last_config_path())


def document(key: str) -> Path | str:
    """A document the Help menu opens: the settings reference is generated from the installed code where no docs
    folder exists; the others are the README's and docs' files, or their web address."""
    if key == "docs/CONFIG.md":
        from studio.core.config.docs import reference_location

        return reference_location()
    from studio.core.system.paths import document_location

    return document_location(key)


def prepare_demo(progress: Callable[[str], None]) -> Any:
    """Build the offline demo (seconds, once) and write its config; returns its assets (`config_path` among them)."""
    from studio.core.config.presets import write_demo_config
    from studio.core.system.demo import build_demo

    assets = build_demo(progress=progress)
    write_demo_config(assets)
    return assets
