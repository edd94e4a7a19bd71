"""The Export dialog never destroys the user's files: a folder of their own is refused before any work,
an earlier export is replaced only after the user says yes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.export.jobs import ExportKind


def _fake_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/none", "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    return folder


@pytest.fixture
def dialog(qtbot, tmp_path):
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter"), runs_root=tmp_path / "runs")
    qtbot.addWidget(widget)
    widget.set_kind(ExportKind.ADAPTER)
    return widget


def test_a_folder_of_the_users_own_files_is_refused_before_any_work(dialog, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "my-notes.txt").write_text("keep me")
    dialog.set_output(tmp_path / "notes")
    asked = []
    dialog.confirm_replace = lambda target: asked.append(target) or True

    assert dialog.start_export() is None
    assert "not an earlier export" in dialog.status_label.text() and "FAILED" in dialog.status_label.text()
    assert asked == [], "nothing to confirm: it is refused outright"
    assert (tmp_path / "notes" / "my-notes.txt").read_text() == "keep me"


def test_an_earlier_export_is_replaced_only_after_the_user_says_yes(qtbot, dialog, tmp_path):
    output = tmp_path / "out"
    dialog.set_output(output)
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)

    (output / "adapter_model.safetensors").write_bytes(b"changed")
    dialog.confirm_replace = lambda target: False
    assert dialog.start_export() is None
    assert "was kept" in dialog.status_label.text()
    assert (output / "adapter_model.safetensors").read_bytes() == b"changed"

    dialog.confirm_replace = lambda target: True
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    assert (output / "adapter_model.safetensors").read_bytes() == b"\0" * 4096


def test_the_dialog_opens_on_the_gguf_type_the_cli_defaults_to(qtbot, tmp_path):
    from studio.cli import build_parser
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter"), runs_root=tmp_path / "runs")
    qtbot.addWidget(widget)
    cli_default = build_parser().parse_args(["export", "gguf", "m", "--output", "x.gguf"]).gguf_type
    assert widget.kind is {"f16": ExportKind.GGUF_F16, "q8_0": ExportKind.GGUF_Q8_0}[cli_default]
    assert widget.output_edit.text().endswith(f"-{cli_default}.gguf")
