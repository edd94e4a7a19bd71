"""The Export dialog never destroys the user's files: a folder of their own is refused before any work,
an earlier export is replaced only after the user says yes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.export.jobs import ExportKind
from export_dialog_shared import _shown  # noqa: F401  (shared with the other half)


def _fake_adapter(folder: Path, base: str = "/none") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    return folder


@pytest.fixture
def dialog(qtbot, tmp_path):
    from studio.ui.tabs.export_dialog import QtExportDialog

    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter"))
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
        widget = QtExportDialog(run.path)
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
    from studio.core.export.gguf import choose_type
    from studio.ui.tabs.export_dialog import QtExportDialog

    adapter = _fake_adapter(tmp_path / "adapter", base="meta-llama/Llama-3.1-8B")  # the bundled shape, offline
    widget = QtExportDialog(adapter)
    qtbot.addWidget(widget)
    cli_default = build_parser().parse_args(["export", "gguf", "m", "--output", "x.gguf"]).gguf_type
    assert cli_default == "auto" and widget.kind is ExportKind.GGUF and widget.session.preselected
    # `--type auto` and the dialog: one rule, one machine, one type.
    assert widget.session.gguf_type == choose_type(adapter).chosen == widget.type_combo.currentData()
    assert widget.output_edit.text().endswith(f"-{widget.session.gguf_type}.gguf")


LLAMA_8B = "meta-llama/Llama-3.1-8B"


def test_an_8gb_card_at_4096_tokens_preselects_q6_k_and_says_why(qtbot, tmp_path):
    from studio.core.plan.gguf_fit import Budget
    from studio.core.sessions.export import ExportSession
    from studio.ui.tabs.export_dialog import QtExportDialog

    # An RTX 4060 as NVML reads it: 8 GiB = 8192 MiB, less 512 MiB for the desktop and 680 MiB for the CUDA context:
    # 7000 MiB usable. Llama-3.1-8B at 4096 tokens:
    #   KV cache  2 (K, V) × 32 layers × 4096 cells × 8 KV heads × 128 × 2 bytes (f16)        =  512 MiB
    #   compute   4 bytes × 512 (micro-batch) × (4096 × (32 heads + 1) + 6 × 4096 + 5)          ≈  312 MiB
    #   weights on the card: the file's tensors less the input embedding, which llama.cpp keeps in RAM
    #     Q8_0:  8.54 GB file → 8145 MiB − 4096 × 128256 × 34/32 B (532 MiB)                  ≈ 7605 MiB
    #            → 7605 + 512 + 312 = 8429 MiB > 7000: does not fit
    #     Q6_K:  6.59 GB file → 6283 MiB − 4096 × 128256 × 210/256 B (411 MiB)                ≈ 5872 MiB
    #            → 5872 + 512 + 312 = 6696 MiB ≤ 7000: fits, and it is the best quality that does.
    session = ExportSession(Budget(8 * 1024**3, "cuda", "NVIDIA GeForce RTX 4060"), k_quants=True)
    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter", base=LLAMA_8B),
                            session=session)
    qtbot.addWidget(widget)
    widget.context_spin.setValue(4096)
    widget.context_spin.editingFinished.emit()
    assert session.context == 4096
    assert widget.type_combo.currentData() == "q6_k"
    assert widget.type_combo.currentText() == "Q6_K — file 6.1 GiB, runs in 6.5 GiB, fits"
    shown = widget.type_why.text()
    assert shown.startswith("Preselected: Q6_K is the best-quality type that fits 6.8 GiB on NVIDIA GeForce RTX 4060 "
                            "(8.0 GiB less 512 MiB for the desktop and 680 MiB for the CUDA context) at a 4096-token "
                            "context: 6.5 GiB needed; Q8_0 would need 8.2 GiB")
    items = {widget.type_combo.itemData(i): widget.type_combo.itemText(i) for i in range(widget.type_combo.count())}
    assert items["q8_0"].endswith("does not fit") and items["q4_k_m"].endswith(", fits")
    assert widget.output_edit.text().endswith("adapter-q6_k.gguf") or widget.output_edit.text().endswith("-q6_k.gguf")

    # The user's choice is the session's; the why says it is theirs.
    widget.type_combo.setCurrentIndex(widget.type_combo.findData("q8_0"))
    widget.type_combo.activated.emit(widget.type_combo.currentIndex())
    assert session.gguf_type == "q8_0" and widget.type_why.text().startswith("Chosen by you: Q8_0 needs 8.2 GiB and "
                                                                            "does not fit")


def test_on_the_cpu_the_dialog_names_the_ram(qtbot, tmp_path):
    from studio.core.plan.gguf_fit import Budget
    from studio.core.sessions.export import ExportSession
    from studio.ui.tabs.export_dialog import QtExportDialog

    session = ExportSession(Budget(16 * 1024**3, "cpu", "RAM"), k_quants=True)
    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter", base=LLAMA_8B),
                            session=session)
    qtbot.addWidget(widget)
    session.set_context(4096)
    # 14 GiB of RAM (16 less 2 for the system); on the CPU the embedding counts too: Q8_0 = 8145 + 824 MiB fits.
    assert widget.type_combo.currentData() == "q8_0"
    assert "14.0 GiB of RAM (no CUDA card: llama.cpp runs it on the CPU" in widget.type_why.text()


def test_without_llama_cpp_the_k_quants_are_listed_but_not_offered(qtbot, tmp_path):
    from studio.core.plan.gguf_fit import Budget
    from studio.core.sessions.export import ExportSession
    from studio.ui.tabs.export_dialog import QtExportDialog

    session = ExportSession(Budget(8 * 1024**3, "cuda", "RTX 4060"), k_quants=False)
    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter", base=LLAMA_8B),
                            session=session)
    qtbot.addWidget(widget)
    session.set_context(4096)
    index = widget.type_combo.findData("q4_k_m")
    assert not widget.type_combo.model().item(index).isEnabled()
    assert widget.type_combo.itemText(index).endswith("(needs llama.cpp)")
    assert session.gguf_type == "q5_1", "the legacy type the gguf package writes, the best of them that fits"


def test_the_dialog_fits_a_laptop_screen_also_with_verify_results(qtbot, tmp_path):
    from studio.core.eval.verify import LLAMA_CPP, CaseCheck, ExportVerification
    from studio.core.plan.gguf_fit import Budget
    from studio.core.sessions.export import ExportSession
    from studio.ui.tabs.export_dialog import QtExportDialog

    session = ExportSession(Budget(8 * 1024**3, "cuda", "NVIDIA GeForce RTX 4060"), k_quants=True)
    widget = QtExportDialog(_fake_adapter(tmp_path / "adapter", base=LLAMA_8B),
                            session=session)
    qtbot.addWidget(widget)
    widget.show()
    assert widget.minimumSizeHint().height() <= 690
    long_reply = "Let me check the network status in Izmir for you. <tool_code>check_outage({\"city\": \"Izmir\"})"
    cases = [CaseCheck(str(i), "Is there an outage in İzmir right now, and when will it be fixed?", long_reply,
                       long_reply.replace("Izmir", "Ankara"), task_studio=True, task_export=i % 2 == 0,
                       differs_at=9, studio_token="Izmir", export_token="Ankara") for i in range(10)]
    result = ExportVerification(tmp_path / "x.gguf", "gguf", LLAMA_CPP, "completed", tmp_path,
                                "10 of the run's training examples", cases, type_label="Q4_K_M")
    widget._on_verified(result)
    widget.status_label.setText("Verified with llama.cpp (llama-cpp-python) on 10 of the run's training examples; "
                                f"recorded on the model card {tmp_path / 'a-long-folder-name' / 'run-q4_k_m.md'}")
    assert not widget.verify_label.isHidden()
    shown = _shown(widget.verify_label)
    assert "broken export: tool call right in 5 cases against the trained model's 10" in shown
    assert "case 0 differs from token 9: `Izmir` → `Ankara`" in shown
    assert "Rounding or broken?" in shown and "at least one case" in shown, "the rule, stated in the dialog"
    hint = widget.minimumSizeHint()
    assert hint.height() <= 690
    widget.resize(widget.minimumSize().expandedTo(hint))
    qtbot.wait(50)
    assert widget.height() <= 690
    for label in (widget.verify_label, widget.status_label, widget.type_why):  # nothing squashed at the minimum size
        assert label.height() >= label.heightForWidth(label.width()), label.text()[:60]


def test_an_adapter_export_offers_no_verification(qtbot, dialog, tmp_path):
    dialog.set_output(tmp_path / "out")
    with qtbot.waitSignal(dialog.export_finished, timeout=30_000) as finished:
        dialog.start_export()
    assert finished.args[0] == "succeeded", finished.args[1]
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)
    assert dialog.verify_button.isHidden() and not dialog.start_verify(), "an adapter alone answers nothing"


