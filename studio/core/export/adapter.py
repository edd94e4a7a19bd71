"""Exporting the adapter: the PEFT-standard folder (with tokenizer and chat template) or a zip of it.

The folder is the run's `adapter/` as training wrote and verified it, plus a model card. It loads
with plain `PeftModel.from_pretrained` — no Finetune Studio needed.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from studio.core.export.model_card import write_model_card
from studio.core.export.staging import (
    ExportError,
    Reporter,
    check_export,
    copy_folder,
    disk_errors,
    ensure_free_space,
    manifest_path,
    record_files,
    staged_output,
)
from studio.core.models.adapters import resolve_adapter_dir
from studio.core.models.source import ModelLoadError
from studio.core.runs.record import RunRecord
from studio.core.system.tasks import NO_TASK, TaskState


def _adapter_source(source: Path) -> Path:
    try:
        return resolve_adapter_dir(Path(source))
    except ModelLoadError as error:
        raise ExportError(str(error)) from None


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_adapter_folder(adapter: Path, target: Path, report: Reporter) -> None:
    """The adapter's files (PEFT's placeholder README.md replaced by our model card) into `target`."""
    summary = RunRecord.find(adapter)
    copy_folder(adapter, target, report, end=0.9, skip=lambda rel: rel.name == "README.md")
    base = summary.base_model if summary and summary.base_model else None
    # The run record travels with the adapter: chat and merge read from it how the base was loaded (trained_base).
    write_model_card(target, summary, "adapter", files={"base": base} if base else None, keep_summary=True)


def export_adapter(source: Path, output: Path, *, overwrite: bool = False, task: TaskState = NO_TASK) -> Path:
    """Copy the adapter of a run (or an adapter folder) to `output`, with a model card; returns `output`.
    `overwrite` lets it replace an unchanged earlier export there (staging.check_output)."""
    report = Reporter(task)
    output = check_export(source, output, is_dir=True, overwrite=overwrite)
    adapter = _adapter_source(source)
    ensure_free_space(output.parent, _folder_size(adapter))
    report(0.0, f"Copying the adapter from {adapter}")
    with staged_output(output, is_dir=True, overwrite=overwrite) as staging, disk_errors(output.parent):
        _write_adapter_folder(adapter, staging, report)
    report(1.0, f"Adapter written to {output}")
    return output


def export_adapter_zip(source: Path, output: Path, *, overwrite: bool = False,
                       task: TaskState = NO_TASK) -> Path:
    """Write the adapter folder (as `export_adapter` makes it) into a zip file `output`."""
    report = Reporter(task)
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise ExportError(f"{output}: the output file name must end in .zip")
    output = check_export(source, output, is_dir=False, overwrite=overwrite)
    adapter = _adapter_source(source)
    ensure_free_space(output.parent, _folder_size(adapter))
    report(0.0, f"Copying the adapter from {adapter}")
    with staged_output(output, is_dir=False, overwrite=overwrite) as staging, disk_errors(output.parent):
        work = staging / "folder"
        work.mkdir()
        try:
            _write_adapter_folder(adapter, work, report.part(0.0, 0.5))
            record_files(work, manifest_path(work, is_dir=True))  # the unzipped folder is an export like any other
            files = sorted(p for p in work.rglob("*") if p.is_file())
            with zipfile.ZipFile(staging / output.name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for i, path in enumerate(files):
                    report(0.5 + 0.5 * i / max(len(files), 1), f"Zipping {path.name}")
                    # One top-level folder, named like the zip: unzipping never scatters files.
                    archive.write(path, f"{output.stem}/{path.relative_to(work).as_posix()}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report(1.0, f"Zip written to {output}")
    return output
