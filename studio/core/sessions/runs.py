"""What the Runs view does to a run beyond reading it: renaming it, folder and record alike."""

from __future__ import annotations

from studio.core.config.settings import ConfigError, load_config, save_config
from studio.core.runs.store import RunDirectory, RunStore


def rename_run(store: RunStore, run: RunDirectory, name: str) -> RunDirectory:
    """Give a run the name the user chose: its folder moves (RunStore.rename's refusals) and its run.toml's name
    follows, so "Open config" and a resume call it by its new name. Returns the renamed run."""
    renamed = store.rename(run, name)
    try:
        config = load_config(renamed.config_path)
    except ConfigError:
        return renamed  # a run without a readable config keeps what it has: only the folder moved
    config.name = renamed.name
    save_config(config, renamed.config_path)
    return renamed
