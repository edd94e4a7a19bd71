"""'Continue from this run with DPO/ORPO/KTO/GRPO': the new run's config, one click from the Runs view."""

from __future__ import annotations

from pathlib import Path

from studio.core.config.settings import ConfigError, RunConfig, load_config
from studio.core.methods.registry import continue_methods, default_method, method_names
from studio.core.methods.registry import method as method_spec
from studio.core.runs.store import RunDirectory
from studio.core.train.init_adapter import adapter_folder

CONTINUE_METHODS = tuple(spec.name for spec in continue_methods())
CONTINUE_LABELS = {spec.name: spec.continue_label for spec in continue_methods()}
"""The Runs view's 'Continue with…' menu, in the usual order: more SFT, then preference tuning."""

PAIRED_DATA = {spec.name: spec.data.needs for spec in continue_methods() if spec.data.needs}
"""What a method with records of its own reads, which an SFT run's chat data is not."""


def continue_config(run_dir: Path | str, method: str) -> RunConfig:
    """The run's own config (model, quantisation, LoRA, training knobs) set to train `method` from its adapter.

    The model and [quantization] stay the run's, so the base loads as its adapter was trained. GRPO and SFT keep the
    run's data (a chat record's last reply is GRPO's expected reply); DPO, ORPO and KTO need preference records, so
    their data file is left empty for the user to choose, and the config does not validate until one is. The name is
    cleared: the new run gets its own. ConfigError names the key when the run has no config or no finished adapter.

    A preference method refines what SFT taught and must not overwrite it (each method's continue_note has the
    measurements: the demo model, ten tool-call prompts, 30 steps of each method from a 60-step SFT adapter, GRPO
    with 4 replies at temperature 0.7; tests/core/test_preference.py measures DPO and KTO): from an SFT run, DPO, KTO and GRPO train at a tenth of its learning rate
    (continued_rate_share), and DPO keeps a supervised term on the chosen replies ([dpo] sft_weight 1); ORPO's loss has its own and keeps the rate.
    """
    if method not in CONTINUE_METHODS:
        raise ConfigError("training.method", method, f"must be one of {', '.join(CONTINUE_METHODS)}")
    spec = method_spec(method)
    run = RunDirectory(Path(run_dir))
    if not run.config_path.is_file():
        raise ConfigError("model.init_adapter", str(run.path), "the run has no run.toml to continue from")
    adapter_folder(str(run.path))  # refuses a run without a finished adapter, naming model.init_adapter
    config = load_config(run.config_path)
    config.name = ""
    config.model.init_adapter = str(run.path.resolve())
    # A preference run's rate was already lowered (or chosen): only an SFT run's is.
    continues_sft = config.training.method == default_method()
    config.training.method = method
    if continues_sft and spec.continued_rate_share != 1.0:
        config.training.learning_rate = float(f"{config.training.learning_rate * spec.continued_rate_share:.6g}")
    spec.continue_settings(getattr(config, method))
    if spec.data.needs:  # records of its own shape, which the run's chat data is not
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
    note = method_spec(config.training.method).continue_note if config.training.method in method_names() else ""
    return "\n".join(line for line in (starts, note) if line)


def opened_settings_text(config: RunConfig) -> str:
    """The window's line when a run's settings, or a continuation of a run, open on the Config tab: the run they
    come from, and what the continuation still needs."""
    method = config.training.method
    if not (source := source_run_name(config)):
        return f"Loaded the settings of run {config.name}." if config.name else "Loaded a run's settings."
    spec = method_spec(method) if method in method_names() else None
    label = spec.title if spec else method.upper()
    text = (f"Loaded the settings of run {config.name}, which continue run {source}'s adapter with {label}"
            if config.name else f"Continuing run {source}'s adapter with {label}")
    if not config.data.train_file and spec is not None and spec.data.needs:
        return f"{text}: choose a {spec.data.needs} file on the Dataset tab, then Start."
    return f"{text}."

