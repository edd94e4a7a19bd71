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

CONTINUED_LEARNING_RATE_SHARE = 0.1
"""DPO, KTO and GRPO continuing an adapter train at this share of its run's learning rate: a rate that taught a
skill from nothing is strong enough to unteach it again (see continue_config)."""

SLOWED_METHODS = ("dpo", "kto", "grpo")
"""The methods whose loss has no supervised term of its own; ORPO's has one and keeps the run's rate."""

CONTINUATION_NOTES = {
    "dpo": "Continuing an adapter: DPO at the SFT run's learning rate without a supervised term unlearns what SFT "
           "taught (measured: 7 of 10 right tool calls became 0 of 10). 'Continue with…' sets a tenth of that rate "
           "and Supervised weight 1 (10 of 10 kept).",
    "kto": "Continuing an adapter: KTO at the SFT run's learning rate unlearns what SFT taught (measured: 7 of 10 "
           "right tool calls became 0 of 10). 'Continue with…' sets a tenth of that rate (10 of 10 kept).",
    "grpo": "Continuing an adapter: GRPO at the SFT run's learning rate unlearns what SFT taught (measured: 7 of 10 "
            "right tool calls became 0 of 10). 'Continue with…' sets a tenth of that rate (8 of 10).",
    "orpo": "Continuing an adapter: ORPO's loss has its own supervised term, which keeps what SFT taught at the SFT "
            "run's learning rate (measured: 7 of 10 right tool calls became 9 of 10).",
}
"""Why a continuation's defaults are what they are, shown on the Config tab (numbers: the demo model, ten tool-call
prompts, 30 steps of each method from a 60-step SFT adapter, GRPO with 4 replies at temperature 0.7;
tests/slow/test_preference_e2e.py measures DPO and KTO)."""


def continue_config(run_dir: Path | str, method: str) -> RunConfig:
    """The run's own config (model, quantisation, LoRA, training knobs) set to train `method` from its adapter.

    The model and [quantization] stay the run's, so the base loads as its adapter was trained. GRPO and SFT keep the
    run's data (a chat record's last reply is GRPO's expected reply); DPO, ORPO and KTO need preference records, so
    their data file is left empty for the user to choose, and the config does not validate until one is. The name is
    cleared: the new run gets its own. ConfigError names the key when the run has no config or no finished adapter.

    A preference method refines what SFT taught and must not overwrite it (CONTINUATION_NOTES has the measurements):
    from an SFT run, DPO, KTO and GRPO train at a tenth of its learning rate, and DPO keeps a supervised term on the
    chosen replies (dpo_sft_weight 1); ORPO's loss has its own and keeps the rate.
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
    continues_sft = config.training.method == "sft"  # a preference run's rate was already lowered (or chosen)
    config.training.method = method
    if method in SLOWED_METHODS and continues_sft:
        config.training.learning_rate = float(f"{config.training.learning_rate * CONTINUED_LEARNING_RATE_SHARE:.6g}")
    if method == "dpo":
        config.training.dpo_sft_weight = max(config.training.dpo_sft_weight, 1.0)
    if method in PAIRED_DATA:
        config.data.train_file = ""
        config.data.eval_file = ""
        config.data.column_mapping = []
        config.data.format = "auto"
    return config


def source_run_name(config: RunConfig) -> str:
    """The run whose adapter a config continues (model.init_adapter: a run folder or its adapter folder), or ""."""
    if not config.model.init_adapter:
        return ""
    folder = Path(config.model.init_adapter)
    return folder.parent.name if folder.name == "adapter" else folder.name


def continuation_note(config: RunConfig) -> str:
    """The Config tab's lines on a run that trains an adapter further ("" otherwise): the adapter it starts from, and
    for a preference method why "Continue with…" chose its learning rate and supervised term."""
    if not (source := source_run_name(config)):
        return ""
    starts = f"Starts from the adapter of run {source} (model.init_adapter)."
    return "\n".join(line for line in (starts, CONTINUATION_NOTES.get(config.training.method, "")) if line)


def opened_settings_text(config: RunConfig) -> str:
    """The window's line when a run's settings, or a continuation of a run, open on the Config tab: the run they
    come from, and what the continuation still needs."""
    method = config.training.method
    if not (source := source_run_name(config)):
        return f"Loaded the settings of run {config.name}." if config.name else "Loaded a run's settings."
    label = CONTINUE_LABELS.get(method, method.upper()).split(" (")[0]
    text = (f"Loaded the settings of run {config.name}, which continue run {source}'s adapter with {label}"
            if config.name else f"Continuing run {source}'s adapter with {label}")
    if not config.data.train_file and method in PAIRED_DATA:
        return f"{text}: choose a {PAIRED_DATA[method]} file on the Dataset tab, then Start."
    return f"{text}."
