"""Where Finetune Studio keeps its files: one per-user data folder, overridable for tests."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "finetune-studio"
HOME_ENV_VAR = "FINETUNE_STUDIO_HOME"
"""When set, this folder replaces the platform's user data folder (tests point it at a tmp dir)."""


def user_data_dir() -> Path:
    """The per-user data folder: `$FINETUNE_STUDIO_HOME` if set, else the platformdirs location."""
    override = os.environ.get(HOME_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    """The folder holding one sub-folder per training run."""
    return user_data_dir() / "runs"
