"""'Continue from this run with DPO/ORPO/KTO/GRPO': the new run's config, one click from the Runs view."""

from __future__ import annotations

from pathlib import Path

from studio.core.config.settings import ConfigError, RunConfig, load_config
from studio.core.runs.store import RunDirectory
from studio.core.train.init_adapter import adapter_folder
from studio.core.train.methods import PREFERENCE_METHODS

CONTINUE_METHODS = ("sft", *PREFERENCE_METHODS)

CONTINUE_LABELS = {"sft": "SFT (more supervised steps)", "dpo": "DPO", "orpo": "ORPO", "kto": "KTO",
                   "grpo": "GRPO (rewards from the metrics)"}
"""The Runs view's 'Continue with…' menu, in the usual order: more SFT, then preference tuning."""

PAIRED_DATA = {"dpo": "prompt/chosen/rejected", "orpo": "prompt/chosen/rejected", "kto": "prompt/completion/label"}
"""What a preference method reads, which an SFT run's chat data is not."""


def continue_config(run_dir: Path | str, method: str) -> RunConfig:
    """The run's own config (model, quantisation, LoRA, training knobs) set to train `method` from its adapter.

    The model and [quantization] stay the run's, so the base loads as its adapter was trained. GRPO and SFT keep the
    run's data (a chat record's last reply is GRPO's expected reply); DPO, ORPO and KTO need preference records, so
    their data file is left empty for the user to choose, and the config does not validate until one is. The name is
    cleared: the new run gets its own. ConfigError names the key when the run has no config or no finished adapter.
    """
    if method not in CONTINUE_METHODS:
        raise ConfigError("training.method", method, f"must be one of {', '.join(CONTINUE_METHODS)}")
    run = RunDirectory(Path(run_dir))
    if not run.config_path.is_file():
        raise ConfigError("model.init_adapter", str(run.path), "the run has no run.toml to continue from")
    adapter_folder(str(run.path))  # refuses a run without a finished adapter, naming model.init_adapter
    config = load_config(run.config_path)
    config.name = ""
    config.model.init_adapter = str(run.path.resolve())
    config.training.method = method
    if method in PAIRED_DATA:
        config.data.train_file = ""
        config.data.eval_file = ""
        config.data.column_mapping = []
        config.data.format = "auto"
    return config
