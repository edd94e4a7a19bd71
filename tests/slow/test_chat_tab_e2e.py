"""The Chat tab with the trained demo: compare mode, Stop, adapters on one base, memory, conversations, export."""

from __future__ import annotations

import gc
import json
import shutil
import weakref

from PySide6.QtCore import Qt
from chat_tab_shared import LOAD_TIMEOUT_MS, tab  # noqa: F401  (shared with the other half)


REPLY_TIMEOUT_MS = 120_000


def _demo_pairs(demo_assets) -> list[tuple[str, str]]:
    rows = [json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    return [(m[0]["content"], m[1]["content"]) for m in rows]




def _load(qtbot, tab, base, adapter=None):
    tab.set_model(str(base), adapter)
    with qtbot.waitSignal(tab.model_loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(tab.load_button, Qt.MouseButton.LeftButton)


def _ask(qtbot, tab, question: str) -> None:
    with qtbot.waitSignal(tab.generation_finished, timeout=REPLY_TIMEOUT_MS):
        tab.prompt_edit.setText(question)
        qtbot.keyClick(tab.prompt_edit, Qt.Key.Key_Return)


def test_compare_mode_answers_trained_on_the_tuned_side_and_differently_on_the_base(qtbot, tab, trained_run,
                                                                                     demo_assets):
    _load(qtbot, tab, demo_assets.model_dir, trained_run / "adapter")
    tab.compare_check.setChecked(True)
    question, answer = _demo_pairs(demo_assets)[0]
    tuned, base = [], []
    tab.reply_finished.connect(tuned.append)
    tab.base_reply_finished.connect(base.append)

    _ask(qtbot, tab, question)

    assert tuned == [answer]
    assert len(base) == 1 and base[0] != answer
    assert answer in tab.transcript.toPlainText()
    assert base[0][:20] in tab.base_transcript.toPlainText() and answer not in tab.base_transcript.toPlainText()
    assert tab.base_pane.isVisible()
    assert "tokens/s" in tab.stats_label.text() and "base:" in tab.stats_label.text()
    assert len(tab.chat_model.adapters) == 1


def test_stop_interrupts_a_long_generation_within_a_second(qtbot, tab, demo_assets):
    _load(qtbot, tab, demo_assets.model_dir)  # the untrained base rambles: a long reply
    tab.max_new_tokens.setValue(2000)
    pieces = []
    tab.piece_received.connect(pieces.append)
    tab.send(_demo_pairs(demo_assets)[3][0])
    qtbot.waitUntil(lambda: len(pieces) >= 3, timeout=REPLY_TIMEOUT_MS)
    assert tab._generator is not None, "still generating when Stop is pressed"

    with qtbot.waitSignal(tab.generation_finished, timeout=1000):
        qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)

    stats = tab.last_stats["tuned"]
    assert stats.stopped and stats.tokens < 2000
    assert "(stopped)" in tab.stats_label.text()
    assert tab.send_button.isEnabled() and not tab.stop_button.isEnabled()


def test_stop_in_compare_mode_leaves_no_unanswered_turn_on_the_base_side(qtbot, tab, trained_run, demo_assets):
    _load(qtbot, tab, demo_assets.model_dir, trained_run / "adapter")
    tab.compare_check.setChecked(True)
    tab.max_new_tokens.setValue(2000)
    pieces = []

    def stop_on_the_first_tuned_piece(piece: str) -> None:
        # Stopping from the piece's own slot is certain to land during the tuned reply: waiting for pieces
        # and then stopping could find that the reply had ended on its own and the base model had begun.
        pieces.append(piece)
        if len(pieces) == 1:
            tab.stop_generation()

    tab.piece_received.connect(stop_on_the_first_tuned_piece)
    with qtbot.waitSignal(tab.generation_finished, timeout=REPLY_TIMEOUT_MS):
        tab.send("Tell me a very long story about the sea.")  # the base model never gets its turn

    assert [m["role"] for m in tab.history] == ["user", "assistant"]
    assert tab.base_history == [], "the base side's unanswered question is not kept"
    assert "stopped before this model answered" in tab.base_transcript.toPlainText()

    question, answer = _demo_pairs(demo_assets)[0]
    tab.max_new_tokens.setValue(64)
    _ask(qtbot, tab, question)
    assert [m["role"] for m in tab.base_history] == ["user", "assistant"], "roles alternate on both sides"
    assert [m["role"] for m in tab.history] == ["user", "assistant", "user", "assistant"]


def test_switching_adapters_keeps_the_one_copy_of_the_base_weights(qtbot, tab, trained_run, demo_assets, tmp_path):
    second_run = tmp_path / "second-run"
    shutil.copytree(trained_run / "adapter", second_run / "adapter")
    (second_run / "run.toml").write_text((trained_run / "run.toml").read_text())
    _load(qtbot, tab, demo_assets.model_dir, trained_run / "adapter")
    embedding = tab.chat_model.model.get_input_embeddings().weight
    pointer = embedding.data_ptr()

    tab.adapter_edit.setText(str(second_run / "adapter"))
    worker = tab.add_adapter()
    with qtbot.waitSignal(worker.finished, timeout=LOAD_TIMEOUT_MS):
        pass
    assert tab.active_adapter.count() == 2 and tab.active_adapter.currentText() == "second-run"
    tab.active_adapter.setCurrentIndex(0)
    assert tab.chat_model.active_adapter == tab.active_adapter.itemText(0)

    question, answer = _demo_pairs(demo_assets)[3]
    replies = []
    tab.reply_finished.connect(replies.append)
    _ask(qtbot, tab, question)
    assert replies == [answer]
    assert tab.chat_model.model.get_input_embeddings().weight.data_ptr() == pointer, "the base was not reloaded"


def test_unloading_lets_the_model_be_collected(qtbot, tab, demo_assets):
    _load(qtbot, tab, demo_assets.model_dir)
    model = weakref.ref(tab.chat_model.model)

    with qtbot.waitSignal(tab.model_unloaded, timeout=10_000):
        qtbot.mouseClick(tab.unload_button, Qt.MouseButton.LeftButton)
    gc.collect()

    assert model() is None, "nothing keeps the weights alive after Unload"
    assert tab.chat_model is None and not tab.send_button.isEnabled()


def test_a_conversation_is_saved_as_openai_messages_and_reopened(qtbot, tab, trained_run, demo_assets, tmp_path):
    _load(qtbot, tab, demo_assets.model_dir, trained_run / "adapter")
    tab.system_prompt.setPlainText("Answer as Nimbus support.")
    question, _ = _demo_pairs(demo_assets)[1]
    _ask(qtbot, tab, question)
    reply = tab.history[-1]["content"]

    path = tab.save_conversation_to(tmp_path / "chat.json")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["messages"] == [{"role": "system", "content": "Answer as Nimbus support."},
                                 {"role": "user", "content": question},
                                 {"role": "assistant", "content": reply}]
    assert saved["finetune_studio"]["model"] == str(demo_assets.model_dir)

    tab.clear()
    tab.system_prompt.clear()
    tab.open_conversation_from(path)
    assert tab.system_prompt.toPlainText() == "Answer as Nimbus support."
    assert tab.history == saved["messages"][1:]
    assert question in tab.transcript.toPlainText() and reply in tab.transcript.toPlainText()


def test_the_export_dialog_writes_gguf_with_progress_and_cancel_leaves_nothing(qtbot, tab, trained_run, tmp_path):
    from studio.core.export.jobs import ExportKind

    tab.set_model("", trained_run / "adapter")
    from studio.ui.tabs.export_dialog import QtExportDialog

    dialog = QtExportDialog(tab.export_source(), runs=[r.path for r in tab.runs.finished_runs()])  # what Export model… opens
    qtbot.addWidget(dialog)
    assert dialog.source == trained_run, "the chat's adapter, as its run"

    dialog.set_kind(ExportKind.GGUF)
    dialog.session.set_gguf_type("q8_0")
    dialog.set_output(tmp_path / "out" / "demo.gguf")
    fractions = []
    with qtbot.waitSignal(dialog.export_finished, timeout=REPLY_TIMEOUT_MS) as finished:
        worker = dialog.start_export()
        worker.progress.connect(lambda fraction, message: fractions.append(fraction))
    assert finished.args[0] == "succeeded", finished.args[1]
    assert (tmp_path / "out" / "demo.gguf").is_file() and (tmp_path / "out" / "demo.Modelfile").is_file()
    assert fractions and fractions == sorted(fractions) and dialog.progress_bar.value() == 1000
    assert "ollama create" in dialog.status_label.text()
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)

    dialog.set_kind(ExportKind.MERGED)
    dialog.set_output(tmp_path / "merged")
    with qtbot.waitSignal(dialog.export_finished, timeout=REPLY_TIMEOUT_MS) as finished:
        worker = dialog.start_export()
        worker.progress.connect(lambda fraction, message: dialog.cancel_export())  # Cancel at the first report
    assert finished.args[0] == "cancelled"
    qtbot.waitUntil(lambda: not dialog.is_running, timeout=10_000)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.partial").exists()
    assert dialog.export_button.isEnabled()


def test_a_4_bit_trained_run_answers_on_the_weights_it_was_trained_on(qtbot, tab, sensitive_run, demo_assets):
    """The default 'As trained' loads a QLoRA run's base in 4 bits; on this model the 16-bit weights would make
    the adapter miss most of its answers (tests/core/test_trained_base.py)."""
    assert tab.precision_trained.isChecked()
    tab.choose_run(sensitive_run)
    with qtbot.waitSignal(tab.model_loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(tab.load_button, Qt.MouseButton.LeftButton)
    assert "4-bit NF4" in tab.model_status.text() and "as it was trained" in tab.model_status.text()
    replies = []
    tab.reply_finished.connect(replies.append)
    pairs = _demo_pairs(demo_assets)[:4]
    for question, _ in pairs:
        tab.clear()
        _ask(qtbot, tab, question)
    assert replies == [answer for _, answer in pairs]

    tab.precision_16.setChecked(True)
    with qtbot.waitSignal(tab.model_loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(tab.load_button, Qt.MouseButton.LeftButton)
    assert "original weights" in tab.model_status.text()
