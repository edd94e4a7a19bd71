"""Finetune Studio: a desktop app for LoRA/QLoRA fine-tuning."""

from importlib.metadata import PackageNotFoundError, version as _package_version

try:
    __version__ = _package_version("finetune-studio")  # the installed distribution's, as pyproject.toml states it
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
