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


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _answer(monkeypatch, yes: bool) -> list[str]:
    """Answer the dialog's QMessageBox question with Yes or No; returns the questions asked."""
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.Yes if yes else QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def test_a_folder_of_the_users_own_files_is_refused_and_a_new_name_offered(qtbot, monkeypatch, dialog, tmp_path):
    (tmp_path / "notes" / ".git").mkdir(parents=True)
    (tmp_path / "notes" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "notes" / "my-notes.txt").write_text("keep me")
    before = _tree(tmp_path / "notes")
    dialog.set_output(tmp_path / "notes")
    asked = _answer(monkeypatch, yes=True)

    assert dialog.start_export() is None
    shown = dialog.status_label.text()
    assert "FAILED" in shown and "holds .git/, which is not part of an earlier Finetune Studio export" in shown
    assert asked == [], "nothing to ask: a folder of the user's own is never replaced"
    assert dialog.output_edit.text() == str(tmp_path / "notes-2") and "notes-2 is free" in shown

    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()  # the offered name: a new folder beside the user's
    assert finished.args[0] == "succeeded", finished.args[1]
    assert (tmp_path / "notes-2" / "adapter_model.safetensors").is_file()
    assert _tree(tmp_path / "notes") == before


def test_an_earlier_export_is_replaced_only_after_the_user_says_yes(qtbot, monkeypatch, dialog, tmp_path):
    output = tmp_path / "out"
    dialog.set_output(output)
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)
    first = _tree(output)

    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"\1" * 4096)  # retrained since
    asked = _answer(monkeypatch, yes=False)
    assert dialog.start_export() is None
    assert len(asked) == 1 and "holds an earlier export" in asked[0]
    assert "was kept" in dialog.status_label.text()
    assert _tree(output) == first

    asked = _answer(monkeypatch, yes=True)
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    assert len(asked) == 1
    assert (output / "adapter_model.safetensors").read_bytes() == b"\1" * 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "out"], "the old export set aside is gone"
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)

    # Edited since it was written: no longer only the studio's, so no question — a new name instead.
    (output / "adapter_model.safetensors").write_bytes(b"changed")
    asked = _answer(monkeypatch, yes=True)
    assert dialog.start_export() is None
    assert asked == [] and "holds adapter_model.safetensors, which is not part of" in dialog.status_label.text()
    assert (output / "adapter_model.safetensors").read_bytes() == b"changed"
    assert dialog.output_edit.text() == str(tmp_path / "out-2")


def test_a_run_still_training_is_not_exported_and_the_dialog_says_why(qtbot, tmp_path):
    from studio.core.runs.events import EventWriter, make_event
    from studio.core.runs.store import RunDirectory
    from studio.ui.tabs.export_dialog import QtExportDialog

    run = RunDirectory(tmp_path / "runs" / "live")
    _fake_adapter(run.adapter_dir)  # an older step's adapter, from a resume
    run.config_path.write_text('name = "live"\n')
    events = EventWriter(run.events_path)
    events.write(make_event("started", pid=1, total_steps=10))
    events.write(make_event("step", step=3, loss=1.0))
    lock = run.writer_lock()
    assert lock.acquire()
    try:
        widget = QtExportDialog(run.path, runs_root=tmp_path / "runs")
        qtbot.addWidget(widget)
        widget.set_kind(ExportKind.ADAPTER)
        widget.set_output(tmp_path / "out")
        assert widget.start_export() is None
        assert f"{run.path} is training, at step 3 of 10; stop it or wait" in widget.status_label.text()
        assert not widget.is_running and not (tmp_path / "out").exists()
    finally:
        lock.release()


def test_the_dialog_opens_on_the_gguf_type_the_cli_defaults_to(qtbot, tmp_path):
    from studio.cli import build_parser
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter"), runs_root=tmp_path / "runs")
    qtbot.addWidget(widget)
    cli_default = build_parser().parse_args(["export", "gguf", "m", "--output", "x.gguf"]).gguf_type
    assert widget.kind is {"f16": ExportKind.GGUF_F16, "q8_0": ExportKind.GGUF_Q8_0}[cli_default]
    assert widget.output_edit.text().endswith(f"-{cli_default}.gguf")


def test_an_adapter_export_offers_no_verification(qtbot, dialog, tmp_path):
    dialog.set_output(tmp_path / "out")
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)
    assert dialog.verify_button.isHidden() and not dialog.start_verify(), "an adapter alone answers nothing"
