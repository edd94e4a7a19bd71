"""Merging an adapter into its base model and saving a standalone 16-bit model.

The base is always reloaded in 16-bit for the merge: merging into 4-bit weights would round the
adapter's update away (and bake quantisation error into the export). The result is sharded
safetensors with the tokenizer, the run's chat template, a generation config that stops at the
template's end-of-turn token, and a model card.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from studio.core.chat import ModelLoadError, adapter_base_model, check_model_source, resolve_adapter_dir
from studio.core.export_common import (
    ExportError, ProgressCallback, Reporter, check_replaceable, disk_errors, ensure_free_space, quiet_libraries,
    staged_output,
)
from studio.core.model_card import RunSummary, write_model_card


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
                  progress: Callable[[str], None] | None = None, on_progress: ProgressCallback | None = None,
                  cancel: threading.Event | None = None) -> Path:
    """Write base + adapter merged, as sharded safetensors with tokenizer, chat template and generation config.

    `progress(message)` is the plain message callback; `on_progress(fraction, message)` also gets
    the fraction done. Setting `cancel` stops at the next stage and leaves nothing at `output`.
    """
    def report_both(fraction: float, message: str) -> None:
        if progress is not None:
            progress(message)
        if on_progress is not None:
            on_progress(fraction, message)

    report = Reporter(report_both, cancel)
    output = check_replaceable(output, is_dir=True)  # before minutes of loading the base model
    adapter_dir = resolve_adapter_dir(Path(adapter_or_run))
    base = base or adapter_base_model(adapter_dir)
    check_model_source(base)
    with quiet_libraries():
        return _merge(adapter_dir, base, output, report)


def _merge(adapter_dir: Path, base: str, output: Path, report: Reporter) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(0.02, f"Loading {base} in 16-bit")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=merge_dtype())
    except OSError as error:
        raise ModelLoadError(f"{base}: the base model cannot be loaded: {error}") from None
    report(0.35, f"Applying {adapter_dir}")
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer_source = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    generation_config = _generation_config(model, tokenizer)
    model.generation_config = generation_config

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    ensure_free_space(output.parent, size)
    report(0.5, f"Saving to {output}")
    with staged_output(output, is_dir=True) as staging, disk_errors(output.parent):
        with torch.no_grad():
            model.save_pretrained(str(staging), max_shard_size="2GB")
        report.check()
        tokenizer.save_pretrained(str(staging))
        generation_config.save_pretrained(str(staging))
        summary = RunSummary.find(adapter_dir)
        write_model_card(staging, summary, "merged", keep_summary=True)
        _check_written(staging)
        report(1.0, f"Merged model written to {output}")
    return output


def _check_written(folder: Path) -> None:
    """The files a standalone model needs, or an ExportError saying which is missing."""
    missing = [name for name in ("config.json", "generation_config.json", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ExportError(f"{folder}: the merged model is incomplete ({', '.join(missing)} not written)")
