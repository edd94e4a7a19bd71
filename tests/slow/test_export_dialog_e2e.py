"""The Export dialog never destroys the user's files: a folder of their own is refused before any work,
an earlier export is replaced only after the user says yes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from studio.core.export.jobs import ExportKind
from export_dialog_shared import _shown  # noqa: F401  (shared with the other half)




@pytest.fixture
def demo_run(trained_run, tmp_path) -> Path:
    """The demo run copied: the check's replies go under its evals folder."""
    import shutil

    run = tmp_path / "demo-run"
    shutil.copytree(trained_run, run)
    return run


def test_verify_export_shows_that_the_gguf_answers_like_the_studio_and_the_card_says_so(qtbot, demo_run, tmp_path):
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(demo_run)
    qtbot.addWidget(widget)
    widget.set_kind(ExportKind.GGUF)
    widget.session.set_gguf_type("f16")
    output = tmp_path / "gguf" / "demo-f16.gguf"
    widget.set_output(output)
    assert widget.verify_button.isHidden(), "nothing to verify before an export is written"
    with qtbot.waitSignal(widget.export_finished, timeout=120_000) as finished:
        widget.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: widget.verify_button.isEnabled(), timeout=10_000)
    assert not widget.verify_button.isHidden() and output.name in widget.verify_button.toolTip()

    with qtbot.waitSignal(widget.verify_finished, timeout=120_000) as verified:
        qtbot.mouseClick(widget.verify_button, Qt.MouseButton.LeftButton)
        assert widget.cancel_button.isEnabled() and widget.cancel_button.text() == "Cancel verification"
        assert not widget.export_button.isEnabled()
    assert verified.args[0] == "succeeded", verified.args[1]
    assert not widget.verify_label.isHidden()
    assert _shown(widget.verify_label).startswith("F16: 10/10 replies identical to the studio's; tool call right "
                                                  "10/10 (trained model 10/10); passes (identical)")
    assert "recorded on the model card" in _shown(widget.status_label)
    card = (output.parent / "demo-f16.md").read_text(encoding="utf-8")
    assert "| Agreement with the trained model | F16: 10/10 replies identical to the studio's" in card
    qtbot.waitUntil(lambda: not widget.is_running, timeout=10_000)
    assert widget.export_button.isEnabled() and widget.cancel_button.text() == "Cancel export"

    # Cancel stops a second check; the card keeps what the first one stated.
    with qtbot.waitSignal(widget.verify_finished, timeout=60_000) as cancelled:
        assert widget.start_verify()
        widget.cancel_export()
    assert cancelled.args[0] == "cancelled", cancelled.args[1]
    assert (output.parent / "demo-f16.md").read_text(encoding="utf-8") == card


def _gguf_export(qtbot, widget, output):
    widget.set_kind(ExportKind.GGUF)
    widget.session.set_gguf_type("q8_0")
    widget.set_output(output)
    assert widget.ollama_button.isHidden(), "nothing to put into Ollama before a GGUF file is written"
    with qtbot.waitSignal(widget.export_finished, timeout=120_000) as finished:
        widget.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: widget.ollama_button.isEnabled(), timeout=10_000)


def test_create_in_ollama_says_how_without_ollama_and_checks_the_model_with_it(qtbot, demo_run, tmp_path,
                                                                               monkeypatch):
    """Without Ollama: the install step and the one command. With it (the `ollama` command and its server, made of
    Ollama's own pieces: tests/ollama_standin.py): the model is created, checked through the chat API, and a model of
    that name is replaced only after a yes."""
    import os

    from ollama_standin import StandInOllama, build_go_renderer, install_fake_ollama_cli
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(demo_run)
    qtbot.addWidget(widget)
    output = tmp_path / "gguf" / "support-bot.gguf"
    _gguf_export(qtbot, widget, output)

    monkeypatch.setenv("PATH", str(tmp_path / "no-ollama-here"))
    assert not widget.create_in_ollama("support-bot")
    shown = _shown(widget.status_label)
    assert "Ollama is not installed here" in shown and "ollama create support-bot -f support-bot.Modelfile" in shown

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_ollama_cli(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("FAKE_OLLAMA_STORE", str(tmp_path / "store"))
    with StandInOllama(build_go_renderer(tmp_path), {"support-bot": output.with_suffix(".Modelfile")}) as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.host.removeprefix("http://"))
        with qtbot.waitSignal(widget.verify_finished, timeout=180_000) as created:
            assert widget.create_in_ollama("support-bot")
        assert created.args[0] == "succeeded", created.args[1]
        assert "Created support-bot in Ollama and checked it through Ollama's chat API: Q8_0: 10/10 replies " \
               "identical" in created.args[1]
        qtbot.waitUntil(lambda: not widget.is_running, timeout=10_000)

        asked: list[str] = []
        monkeypatch.setattr(widget, "confirm_replace_ollama", lambda name: asked.append(name) or False)
        assert not widget.create_in_ollama("support-bot"), "the user said no: nothing replaced"
        assert asked == ["support-bot"]
