"""Turning an exception from a training run into a `failed` event a user can act on."""

from __future__ import annotations

from typing import Any

from studio.core.config import ConfigError, RunConfig
from studio.core.dataset import DataError
from studio.core.events import make_event


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM (torch.cuda.OutOfMemoryError is a RuntimeError), bitsandbytes/CPU allocation failures."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "cuda_error_out_of_memory" in text)


def oom_hint(config: RunConfig) -> str:
    """Concrete changes that lower peak memory, most effective first, for this config."""
    t = config.training
    steps = []
    if not t.gradient_checkpointing:
        steps.append("turn on gradient checkpointing")
    if t.per_device_train_batch_size > 1:
        accumulation = t.gradient_accumulation_steps * t.per_device_train_batch_size
        steps.append(f"use batch size 1 with gradient accumulation {accumulation} (same effective batch)")
    if t.max_length > 256:
        steps.append(f"halve max length to {t.max_length // 2}")
    if config.quantization.mode != "4bit":
        steps.append("load the base model in 4-bit")
    if config.lora.r > 16:
        steps.append(f"lower the LoRA rank to {max(8, config.lora.r // 2)}")
    if not steps:
        steps.append("choose a smaller base model")
    return "Out of memory: " + "; ".join(steps) + "."


def failure_event(error: BaseException, config: RunConfig | None) -> dict[str, Any]:
    """The `failed` event for an exception: kind oom | data | config | crash, message and hint."""
    if isinstance(error, ConfigError):
        return make_event("failed", kind="config", message=str(error), key=error.key,
                          hint=f"Fix '{error.key}' in the config and start again.")
    if isinstance(error, DataError):
        return make_event("failed", kind="data", message=str(error),
                          issues=[str(i) for i in error.issues[:50]],
                          hint="Fix or remove the rows listed, then start again.")
    if is_out_of_memory(error):
        settings = {}
        if config is not None:
            t = config.training
            settings = {"max_length": t.max_length, "per_device_train_batch_size": t.per_device_train_batch_size,
                        "gradient_checkpointing": t.gradient_checkpointing, "r": config.lora.r,
                        "quantization": config.quantization.mode}
        hint = oom_hint(config) if config is not None else "Lower max length or batch size."
        return make_event("failed", kind="oom", message=f"{type(error).__name__}: {error}".strip()[:2000],
                          settings=settings, hint=hint)
    return make_event("failed", kind="crash", message=f"{type(error).__name__}: {error}"[:2000],
                      hint="The traceback is in the run's train.log.")
