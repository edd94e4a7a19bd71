"""Turning an exception from a training run into a `failed` event a user can act on."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config.settings import ConfigError, RunConfig, copy_config
from studio.core.data.issues import DataError
from studio.core.runs.events import make_event
from studio.core.runs.store import RunDirectory
from studio.core.system.units import format_bytes


class DiskFullError(OSError):
    """No space left on the run's disk while the run was saving something (a checkpoint, the adapter)."""

    def __init__(self, folder: Path, *, saving: str, intact: Path | None = None, needed_bytes: int | None = None):
        super().__init__(errno.ENOSPC, f"No space left on device while saving {saving}", str(folder))
        self.folder = Path(folder)
        self.saving = saving
        self.intact = intact
        self.needed_bytes = needed_bytes

    def message(self) -> str:
        intact = f"{self.intact.name} is intact" if self.intact is not None else "no checkpoint was saved yet"
        free = f"free {format_bytes(self.needed_bytes, style='disk')}" if self.needed_bytes else "free some space"
        then = "Resume" if self.intact is not None else "start again"
        return f"no space left on {self.folder} while saving {self.saving}; {intact}; {free} and {then}"




_RUST_DISK_FULL = re.compile(rf"\(os error ({errno.ENOSPC}|{getattr(errno, 'EDQUOT', errno.ENOSPC)})\)")
"""How Rust's std::io::Error ends its text for ENOSPC and EDQUOT (the safetensors writer's full disk)."""


def folder_size(folder: Path) -> int:
    """Bytes in the files under `folder` (0 if it is gone)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC (or a quota) anywhere in the exception's chain, or torch's way of saying it.

    torch.save reports a failed write as `RuntimeError: [enforce fail at inline_container.cc:…] unexpected pos
    …` (PyTorchStreamWriter found fewer bytes written than it wrote) and drops the OSError that caused it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
        text = str(error)
        if isinstance(error, RuntimeError) and ("No space left on device" in text
                                                or ("inline_container" in text and "unexpected pos" in text)):
            return True
        # safetensors writes in Rust and raises its own SafetensorError (not an OSError) with the io error as text:
        # "Error while serializing: I/O error: No space left on device (os error 28)".
        if _RUST_DISK_FULL.search(text):
            return True
        error = error.__cause__ or error.__context__
    return False


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM (torch.cuda.OutOfMemoryError is a RuntimeError), bitsandbytes/CPU allocation failures."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "cuda_error_out_of_memory" in text)


@dataclass(frozen=True)
class MemorySaving:
    """One change to a config that lowers peak memory: what it is, for people, and which fields it sets."""

    description: str
    changes: dict[str, Any]  # "section.field" -> new value
    # Whether a run may continue from its checkpoint with the change: the adapter's shapes, the base weights and
    # the steps' schedule (same effective batch) stay as they were. A rank or a quantisation change may not.
    resumable: bool = False


def memory_savings(config: RunConfig) -> list[MemorySaving]:
    """Concrete changes that lower peak memory, most effective first, for this config."""
    t = config.training
    savings = []
    if not t.gradient_checkpointing:
        savings.append(MemorySaving("turn on gradient checkpointing", {"training.gradient_checkpointing": True},
                                    resumable=True))
    if t.per_device_train_batch_size > 1:
        accumulation = t.gradient_accumulation_steps * t.per_device_train_batch_size
        savings.append(MemorySaving(
            f"use batch size 1 with gradient accumulation {accumulation} (same effective batch)",
            {"training.per_device_train_batch_size": 1, "training.gradient_accumulation_steps": accumulation},
            resumable=True))
    if t.max_length > 256:
        savings.append(MemorySaving(f"halve max length to {t.max_length // 2}",
                                    {"training.max_length": t.max_length // 2}, resumable=True))
    if config.quantization.mode != "4bit":
        savings.append(MemorySaving("load the base model in 4-bit", {"quantization.mode": "4bit"}))
    if config.lora.r > 16:
        rank = max(8, config.lora.r // 2)
        savings.append(MemorySaving(f"lower the LoRA rank to {rank}",
                                    {"lora.r": rank,
                                     "lora.lora_alpha": max(1, round(config.lora.lora_alpha * rank / config.lora.r))}))
    return savings


def oom_hint(config: RunConfig) -> str:
    """Concrete changes that lower peak memory, most effective first, for this config."""
    steps = [saving.description for saving in memory_savings(config)] or ["choose a smaller base model"]
    return "Out of memory: " + "; ".join(steps) + "."


def oom_retry_config(config: RunConfig) -> tuple[RunConfig, MemorySaving] | None:
    """A copy of `config` with the most effective memory saving applied, and that saving; None if none is left.

    One change at a time, so the user sees which one made the run fit (the "Retry" button of a run that
    ran out of memory; pressing it again after another OOM applies the next one).
    """
    savings = memory_savings(config)
    if not savings:
        return None
    adjusted = copy_config(config)
    for dotted, value in savings[0].changes.items():
        section, name = dotted.split(".")
        setattr(getattr(adjusted, section), name, value)
    adjusted.validate()
    return adjusted, savings[0]


_TERMINAL_CODES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
"""ANSI/VT escape sequences (colours, OSC links): libraries colour their messages for a terminal."""


def plain_text(text: str) -> str:
    """`text` without terminal escape sequences, as events.jsonl, the window and a log file need it."""
    return _TERMINAL_CODES.sub("", text)


def failure_event(error: BaseException, config: RunConfig | None, *, folder: Path | None = None) -> dict[str, Any]:
    """The `failed` event for an exception: kind oom | data | config | disk | crash, message and hint, in plain
    text.

    `folder` is the run folder, named by a full disk's message when the error does not say where it was saving.
    """
    event = _failure_event(error, config, folder=folder)
    for name in ("message", "hint"):
        if isinstance(event.get(name), str):
            event[name] = plain_text(event[name])
    if isinstance(event.get("issues"), list):
        event["issues"] = [plain_text(issue) for issue in event["issues"]]
    return event


def _failure_event(error: BaseException, config: RunConfig | None, *, folder: Path | None = None) -> dict[str, Any]:
    if isinstance(error, ConfigError):
        return make_event("failed", kind="config", message=str(error), key=error.key,
                          hint=f"Fix '{error.key}' in the config and start again.")
    if isinstance(error, DataError):
        hint = ("Fix or remove the rows listed (or tick Skip bad rows), then start again." if error.issues else
                "Open the data on the Dataset tab to see what is wrong with it, or choose other data.")
        return make_event("failed", kind="data", message=str(error),
                          issues=[str(i) for i in error.issues[:50]], hint=hint)
    if isinstance(error, DiskFullError):
        return make_event("failed", kind="disk", message=error.message(), folder=str(error.folder),
                          intact_checkpoint=str(error.intact) if error.intact else None,
                          hint="Free space on that disk, then Resume." if error.intact else
                               "Free space on that disk, then start again.")
    if is_disk_full(error):
        file = Path(error.filename) if isinstance(error, OSError) and error.filename else None
        where = folder or (file.parent if file is not None else None)
        intact = RunDirectory(Path(folder)).latest_checkpoint() if folder is not None else None
        saving = f" while saving {file.name.removesuffix('.tmp')}" if file is not None else ""
        message = (f"no space left on {where or 'the disk'}{saving}"
                   + (f"; {intact.name} is intact; free some space and Resume" if intact else
                      "; free some space and start again"))
        return make_event("failed", kind="disk", message=message, folder=str(where) if where else None,
                          intact_checkpoint=str(intact) if intact else None,
                          detail=f"{type(error).__name__}: {error}"[:500],
                          hint="Free space on that disk, then Resume." if intact else
                               "Free space on that disk, then start again.")
    if is_out_of_memory(error):
        settings = {}
        if config is not None:
            t = config.training
            settings = {"max_length": t.max_length, "per_device_train_batch_size": t.per_device_train_batch_size,
                        "gradient_checkpointing": t.gradient_checkpointing, "r": config.lora.r,
                        "quantization": config.quantization.mode}
        hint = oom_hint(config) if config is not None else "Lower max length or batch size."
        retry = oom_retry_config(config) if config is not None else None
        return make_event("failed", kind="oom", message=f"{type(error).__name__}: {error}".strip()[:2000],
                          settings=settings, hint=hint,
                          suggestion=retry[1].description if retry else None,
                          suggestion_changes=retry[1].changes if retry else None,
                          suggestion_resumable=retry[1].resumable if retry else False)
    return make_event("failed", kind="crash", message=f"{type(error).__name__}: {error}"[:2000],
                      hint="The traceback is in the run's train.log.")
