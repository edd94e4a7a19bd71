"""The one output rule of every export (export.staging.check_output), end to end through `finetune-studio`:

- a run folder, a folder inside one or a folder holding one is never an output (exit 2 naming it);
- an existing folder is replaced only when it holds an unchanged earlier export and --overwrite is given;
- anything else there (.git/, the user's notes, an edited Modelfile) is refused, naming it; nothing is deleted;
- every file of a GGUF export is named for the GGUF, so two quants of one run sit side by side;
- a run that is still training is not exported or merged;
- a read-only folder, a mount point or a disk that fills up during the merge end in exit 2 and one line.

The user's files are compared byte for byte before and after each refusal.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`: a file's bytes, None for a folder (so an emptied folder shows too)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


# --- the rule's parts, without a model -----------------------------------------------------------------------------


def _fake_adapter(folder: Path) -> Path:
    import json

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/none", "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    return folder


def test_a_verified_export_stays_replaceable_but_an_edited_one_does_not(tmp_path):
    from studio.core.export.adapter import export_adapter
    from studio.core.export.model_card import record_agreement
    from studio.core.export.staging import OutputHoldsOtherFiles, check_output

    out = export_adapter(_fake_adapter(tmp_path / "adapter"), tmp_path / "out")
    record_agreement(out, "10/10 replies identical to the studio's")  # what a verification writes on the card
    assert "10/10 replies identical" in (out / "README.md").read_text(encoding="utf-8")
    assert check_output(out, is_dir=True, overwrite=True) == out
    (out / "README.md").write_text("# my own notes on this adapter\n", encoding="utf-8")
    with pytest.raises(OutputHoldsOtherFiles, match=r"out: holds README.md, which is not part of an earlier"):
        check_output(out, is_dir=True, overwrite=True)


def test_an_overwrite_that_cannot_move_the_new_export_in_puts_the_old_one_back(tmp_path, monkeypatch):
    import errno
    import os

    from studio.core.export.adapter import export_adapter
    from studio.core.export.staging import ExportError

    adapter = _fake_adapter(tmp_path / "adapter")
    out = export_adapter(adapter, tmp_path / "out")
    before = _tree(out)
    (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 4096)
    real_replace = os.replace

    def failing_replace(source, target):
        if str(source).endswith(".partial"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr("studio.core.export.staging.os.replace", failing_replace)
    with pytest.raises(ExportError, match=r"out: the export could not be moved into place .*nothing was changed"):
        export_adapter(adapter, out, overwrite=True)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "out"]
