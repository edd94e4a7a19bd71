"""Merging an adapter into its base model and saving a standalone 16-bit model.

The adapter is added to the weights it was trained against (trained_base): for a QLoRA run, the
base quantised exactly as in training and dequantised, so the merged model answers like the
trained one; the original 16-bit weights only when asked for (`BaseWeights.ORIGINAL`). The
merged weights are stored in 16 bits, never re-quantised to 4 bits (that would round the
adapter's update away). The result is sharded safetensors with the tokenizer, the run's chat
template, a generation config that stops at the template's end-of-turn token, and a model card.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from studio.core.chat.model import check_model_source
from studio.core.export.model_card import write_model_card
from studio.core.export.staging import (
    ExportError,
    Reporter,
    check_export,
    disk_errors,
    ensure_free_space,
    quiet_libraries,
    staged_output,
)
from studio.core.models.adapters import check_adapter_fits, load_adapter, resolve_adapter_dir
from studio.core.models.trained_base import (
    BaseWeights,
    TrainedBase,
    check_remote_code,
    load_causal_lm,
    load_dequantized_trained_base,
)
from studio.core.models.weights import check_weights
from studio.core.runs.record import RunRecord
from studio.core.system.tasks import NO_TASK, TaskState


def merge_dtype() -> Any:
    """bfloat16, or float16 on a CUDA card without bf16: always 16-bit, never the 4-bit training weights."""
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _generation_config(model: Any, tokenizer: Any) -> Any:
    """The base's generation config (or one from its config), stopping at the tokenizer's end-of-turn too."""
    from transformers import GenerationConfig

    config = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(model.config)
    eos = config.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def merge_adapter(adapter_or_run: Path, output: Path, *, base: str | None = None,
                  weights: BaseWeights | str = BaseWeights.TRAINED, verify: int | None = None, overwrite: bool = False,
                  trust_remote_code: bool | None = None, allow_pickle: bool | None = None,
                  task: TaskState = NO_TASK) -> Path:
    """Write base + adapter merged, as sharded safetensors with tokenizer, chat template and generation config.

    `weights`: TRAINED adds the adapter to the weights it trained on (a QLoRA run's dequantised 4-bit base),
    ORIGINAL to the original 16-bit weights. `verify` N compares the merged model's greedy replies with the
    trained model's on N of the run's own examples and states the result on the model card (fidelity);
    None means: only for a merge into the original weights of a quantised run, whose effect must be shown.
    `trust_remote_code` (and `allow_pickle`, core.models.weights) None keeps what the run allowed.
    `task.progress(fraction, message)` reports; a cancelled task stops at the next stage and leaves nothing at
    `output`. `overwrite` lets it replace an unchanged earlier export (staging.check_output).
    """
    report = Reporter(task)
    output = check_export(adapter_or_run, output, is_dir=True, overwrite=overwrite)  # before minutes of loading
    adapter_dir = resolve_adapter_dir(Path(adapter_or_run))
    trained = TrainedBase.of_adapter(adapter_dir, base=base)
    if trust_remote_code is not None:  # the user's word overrides what the run allowed
        trained = dataclasses.replace(trained, trust_remote_code=trust_remote_code)
    if allow_pickle is not None:
        trained = dataclasses.replace(trained, allow_pickle=allow_pickle)
    check_model_source(trained.base)
    check_remote_code(trained.base, trained.trust_remote_code)  # the base's own code, then the adapter's files
    check_weights(adapter_dir, allow_pickle=trained.allow_pickle)  # the base's weights: when it loads
    check_adapter_fits(adapter_dir, trained.base)
    weights = BaseWeights(weights)
    if verify is None:
        from studio.core.export.fidelity import DEFAULT_EXAMPLES

        verify = DEFAULT_EXAMPLES if weights is BaseWeights.ORIGINAL and trained.quantized else 0
    with quiet_libraries():
        return _merge(adapter_dir, trained, weights, output, report, verify=verify, overwrite=overwrite)


def load_base_for_merge(trained: TrainedBase, weights: BaseWeights, report: Reporter) -> Any:
    """The base weights the adapter is added to, in plain layers (see trained_base)."""
    if trained.quantized and weights is BaseWeights.TRAINED:
        report(0.02, f"Loading {trained.base} as it was trained ({trained.describe()}) and dequantising it")
        return load_dequantized_trained_base(trained)
    report(0.02, f"Loading {trained.base} in 16-bit" + (" (the original weights, not the ones the adapter "
                                                        "trained on)" if trained.quantized else ""))
    return load_causal_lm(trained.base, trust_remote_code=trained.trust_remote_code,
                          allow_pickle=trained.allow_pickle, dtype=merge_dtype())


def _merge(adapter_dir: Path, trained: TrainedBase, weights: BaseWeights, output: Path, report: Reporter, *,
           verify: int = 0, overwrite: bool = False) -> Path:
    import torch

    from studio.core.models.trained_base import load_trusted_tokenizer

    model = load_base_for_merge(trained, weights, report)
    report.check()
    report(0.35, f"Applying {adapter_dir}")
    # PEFT adds B·A·scale to each weight in the weight's own dtype; the result is stored in 16 bits.
    model = load_adapter(model, adapter_dir, allow_pickle=trained.allow_pickle, base=trained.base).merge_and_unload()
    model = model.to(merge_dtype())
    tokenizer_source = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else trained.base
    tokenizer = load_trusted_tokenizer(tokenizer_source, trust_remote_code=trained.trust_remote_code)
    generation_config = _generation_config(model, tokenizer)
    model.generation_config = generation_config

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    ensure_free_space(output.parent, size)
    report(0.5, f"Saving to {output}")
    # Every write (weights, tokenizer, card) inside disk_errors: a full disk after the space check passed ends as
    # "no space left on ...; nothing was changed" with the staging folder removed, never as a traceback.
    with staged_output(output, is_dir=True, overwrite=overwrite) as staging, disk_errors(output.parent):
        with torch.no_grad():
            model.save_pretrained(str(staging), max_shard_size="2GB")
        report.check()
        tokenizer.save_pretrained(str(staging))
        generation_config.save_pretrained(str(staging))
        summary = RunRecord.find(adapter_dir)
        if summary is not None:
            summary.merged_into = merged_into_text(trained, weights)
        write_model_card(staging, summary, "merged", keep_summary=True)
        _check_written(staging)
        if verify > 0 and summary is not None:
            del model  # one model in memory at a time while the two are compared
            summary.agreement = _measure_agreement(adapter_dir, staging, verify, report)
            write_model_card(staging, summary, "merged", keep_summary=True)
    report(1.0, f"Merged model written to {output}")  # only once it is in place
    return output


def _measure_agreement(adapter_dir: Path, merged: Path, examples: int, report: Reporter) -> str:
    from studio.core.export.fidelity import merged_agreement

    report(0.8, f"Comparing the merged model's replies with the trained model's on {examples} of the run's examples")
    try:
        agreement = merged_agreement(adapter_dir, merged, limit=examples)
    except (OSError, ValueError) as error:  # the run's data moved or changed: say so, the merge itself stands
        text = f"not measured: {error}"
    else:
        text = agreement.text()
    report(0.95, f"Agreement: {text}")
    return text


def merged_into_text(trained: TrainedBase, weights: BaseWeights) -> str:
    """What the model card says about the weights the adapter was merged into."""
    if not trained.quantized:
        return "the 16-bit base weights it was trained on"
    if weights is BaseWeights.TRAINED:
        return f"the {trained.describe()} base weights it was trained on, dequantised"
    return (f"the original 16-bit weights, not the {trained.describe()} weights it was trained on: replies can "
            "differ from the trained model's")


def _check_written(folder: Path) -> None:
    """The files a standalone model needs, or an ExportError saying which is missing."""
    missing = [name for name in ("config.json", "generation_config.json", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ExportError(f"{folder}: the merged model is incomplete ({', '.join(missing)} not written)")
