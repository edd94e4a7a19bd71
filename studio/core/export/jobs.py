"""The export kinds the Export dialog offers, each one core function with progress and cancel.

    adapter folder · adapter zip · merged 16-bit model · GGUF + Modelfile (its type: sessions.export)

Every kind starts from a run directory (or an adapter folder) and writes one output path, so the
dialog, the CLI and tests drive them the same way. A merged model or a GGUF file can then be verified
(`verify_export`): the same cases answered by the studio and by the export, the result on its model card.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.system.tasks import NO_TASK, TaskState, reporting


@dataclass(frozen=True)


class _KindInfo:
    label: str
    description: str
    suffix: str  # "" for a folder


class ExportKind(enum.Enum):
    ADAPTER = _KindInfo("Adapter folder (PEFT)",
                        "The LoRA adapter with tokenizer and chat template. Small; needs the base model to run.", "")
    ADAPTER_ZIP = _KindInfo("Adapter as a .zip", "The same adapter folder in one zip file, to share or upload.", ".zip")
    MERGED = _KindInfo("Merged model (16-bit)",
                       "The adapter merged into its base, as a standalone transformers model (sharded safetensors).",
                       "")
    GGUF = _KindInfo("GGUF + Ollama Modelfile",
                     "One file for llama.cpp / Ollama, with a Modelfile; its type from the list below.", ".gguf")

    @property
    def label(self) -> str:
        return self.value.label

    @property
    def description(self) -> str:
        return self.value.description

    @property
    def is_file(self) -> bool:
        return bool(self.value.suffix)

    def default_output(self, run_name: str, folder: Path, gguf_type: str | None = None) -> Path:
        """A sensible output path for `run_name` inside `folder` (a GGUF file named for its type when it is known)."""
        stem = {ExportKind.ADAPTER: "adapter", ExportKind.ADAPTER_ZIP: "adapter", ExportKind.MERGED: "merged",
                ExportKind.GGUF: "gguf"}[self]
        if self is ExportKind.GGUF:
            # A folder for the run's GGUF files: each quant's Modelfile and card are named for it (NAME.Modelfile,
            # NAME.md), so exports of several types sit side by side there.
            return Path(folder) / f"{run_name}-gguf" / f"{run_name}{'-' + gguf_type if gguf_type else ''}.gguf"
        return Path(folder) / f"{run_name}-{stem}{self.value.suffix}"


def default_exports_dir() -> Path:
    """Where an export goes unless the user picks a place (the Export dialog, and the commands `train` suggests):
    a folder of its own in the home folder, so the runs folder holds runs only."""
    return Path.home() / "finetune-studio-exports"


def check_target(kind: ExportKind, source: Path, output: Path, *, overwrite: bool = False) -> Path:
    """`output` made absolute, or an ExportError when the export may not run: the source is still training, or the
    output rule (staging.check_output) refuses the place — OutputNeedsOverwrite when it holds an unchanged earlier
    export, which the window replaces only after asking. The same check every writer makes before its work."""
    from studio.core.export.staging import check_export

    return check_export(source, output, is_dir=not kind.is_file, overwrite=overwrite)


def run_export(kind: ExportKind, source: Path, output: Path, *, weights: str = "trained", overwrite: bool = False,
               gguf_type: str = "auto", context: int | None = None, task: TaskState = NO_TASK) -> Any:
    """Run one export of `source` (a run directory or an adapter folder) to `output`; `weights` says which base
    weights a merge adds the adapter to (trained_base.BaseWeights); `overwrite` lets it replace an unchanged earlier
    export; `task.progress(fraction, message)` reports."""
    options = {"overwrite": overwrite, "task": task}
    if kind is ExportKind.ADAPTER:
        from studio.core.export.adapter import export_adapter

        return export_adapter(source, output, **options)
    if kind is ExportKind.ADAPTER_ZIP:
        from studio.core.export.adapter import export_adapter_zip

        return export_adapter_zip(source, output, **options)
    if kind is ExportKind.MERGED:
        from studio.core.export.merge import merge_adapter

        return merge_adapter(source, output, weights=weights, **options)
    from studio.core.export.gguf import export_gguf

    return export_gguf(source, output, gguf_type=gguf_type, context=context, weights=weights, **options)


def verify_export(source: Path, export: Path, *, engine: str = "auto", limit: int | None = None,
                  max_new_tokens: int | None = None, task: TaskState = NO_TASK) -> Any:
    """Compare the export's greedy replies with the studio's (eval.verify.run_check) and, once every case is
    answered, state the result on the export's model card. Returns the eval.verify.ExportVerification; a
    cancelled check leaves the card as it was. `task.progress(fraction, message)` reports."""
    from studio.core.eval import verify
    from studio.core.export.model_card import record_agreement
    from studio.core.export.staging import quiet_libraries

    def progress(done: int, total: int, message: str) -> None:
        task.progress(done / total if total else 0.0, message)

    options: dict[str, Any] = {}
    if limit is not None:
        options["limit"] = limit
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    with quiet_libraries():  # the check loads two models: no "Loading weights" bars between the progress lines
        result = verify.run_check(source, export, engine=engine, task=reporting(task, progress), **options)
    if result.status == "completed":
        result.readme = record_agreement(result.export, result.text())
    return result
