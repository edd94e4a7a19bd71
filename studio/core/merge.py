"""Merging an adapter into its base model and saving a standalone 16-bit model.

The base is always reloaded in 16-bit for the merge: merging into 4-bit weights would round the
adapter's update away (and bake quantisation error into the export).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from studio.core.chat import adapter_base_model, check_model_source, resolve_adapter_dir


def merge_adapter(adapter_or_run: Path, output: Path, *, base: str | None = None,
                  progress: Callable[[str], None] | None = None) -> Path:
    """Write base + adapter merged, as sharded safetensors with tokenizer, chat template and generation config."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = progress or (lambda message: None)
    adapter_dir = resolve_adapter_dir(Path(adapter_or_run))
    base = base or adapter_base_model(adapter_dir)
    check_model_source(base)
    dtype = torch.bfloat16
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        dtype = torch.float16

    report(f"Loading {base} in 16-bit")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    report(f"Applying {adapter_dir}")
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file()
                                              else base)

    output = Path(output)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    report(f"Saving to {output}")
    model.save_pretrained(str(staging), max_shard_size="2GB")
    tokenizer.save_pretrained(str(staging))
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    return output
