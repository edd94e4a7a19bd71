"""The window walked as a new user walks it (issue 22's walk): what the screen shows is what the studio uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PySide6.QtCore import Qt

from studio.core.runs.store import RunStore
from walk_shared import make_window  # noqa: F401  (shared with the other half)

LOAD_TIMEOUT_MS = 120_000
TRAINING_TIMEOUT_MS = 300_000






def _first_question(demo_assets) -> str:
    line = demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()[0]
    return json.loads(line)["messages"][0]["content"]


# ------------------------------------------------------------------- 1. the adapter named is the one that answers


def test_open_in_chat_with_another_run_answers_with_that_runs_adapter(qtbot, make_window, trained_run, demo_assets,
                                                                      tmp_path):
    store = RunStore(tmp_path / "runs")
    for name in ("demo", "demo-2"):
        shutil.copytree(trained_run, store.root / name)
    win = make_window(store)
    chat = win.chat_tab
    chat.choose_run(store.root / "demo")
    with qtbot.waitSignal(chat.model_loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    assert chat.chat_model.active_adapter == "demo"

    # Evaluate → right-click a row → "Open in Chat with demo-2" → Send.
    question = _first_question(demo_assets)
    win.evaluate_tab.open_in_chat.emit(store.root / "demo-2", [{"role": "user", "content": question}])
    assert chat.adapter_edit.text() == str(store.root / "demo-2" / "adapter")
    with qtbot.waitSignal(chat.reply_finished, timeout=LOAD_TIMEOUT_MS * 2):
        qtbot.mouseClick(chat.send_button, Qt.MouseButton.LeftButton)

    assert chat.chat_model.active_adapter == "demo-2", "the adapter the field names answered"
    assert Path(chat.chat_model.adapter_paths["demo-2"]) == store.root / "demo-2" / "adapter"
    shown = chat.transcript.toPlainText()
    assert "Model (demo-2):" in shown, shown
    assert "Model (demo):" not in shown


# ------------------------------------------------------------------------------- 7. a coherent chat after Clear


def test_clear_leaves_a_loaded_model_ready_and_nothing_to_regenerate(qtbot, make_window, demo_assets):
    win = make_window()
    chat = win.chat_tab
    assert chat.transcript.placeholderText().startswith("Load a model")
    chat.set_model(str(demo_assets.model_dir))
    with qtbot.waitSignal(chat.model_loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    chat.max_new_tokens.setValue(8)
    with qtbot.waitSignal(chat.generation_finished, timeout=LOAD_TIMEOUT_MS):
        chat.prompt_edit.setText("hello")
        qtbot.keyClick(chat.prompt_edit, Qt.Key.Key_Return)
    assert chat.regenerate_button.isEnabled()

    qtbot.mouseClick(chat.clear_button, Qt.MouseButton.LeftButton)

    assert not chat.regenerate_button.isEnabled(), "nothing left to answer again"
    placeholder = chat.transcript.placeholderText()
    assert not placeholder.startswith("Load a model") and "is loaded" in placeholder, placeholder
    assert chat.send_button.isEnabled() and chat.prompt_edit.isEnabled()


# ------------------------------------------ 6. Evaluate lists finished runs; the Runs view newest first; 7. RAM panel


def test_a_run_trained_in_the_window_is_listed_to_evaluate_newest_first_and_the_ram_panel_lets_go(
        qtbot, make_window, trained_run, demo_assets, tmp_path):
    no_finished_runs = "No finished runs yet: train one on the Training tab, then evaluate it here."
    store = RunStore(tmp_path / "runs")
    win = make_window(store)
    assert win.evaluate_tab.status.text() == no_finished_runs
    shutil.copytree(trained_run, store.root / "zzz-older")  # trained earlier; last by name
    assert win._load_config_file(demo_assets.config_path)
    tab = win.training_tab
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=TRAINING_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()

    listed = [win.evaluate_tab.runs_list.item(i).text() for i in range(win.evaluate_tab.runs_list.count())]
    assert sorted(listed) == sorted(["zzz-older", tab.run_dir.name])
    assert win.evaluate_tab.status.text() != no_finished_runs, "finished runs are listed"
    qtbot.waitUntil(lambda: win.runs_view.table.rowCount() == 2, timeout=30_000)
    first = [win.runs_view.table.item(row, 0).text() for row in range(2)]
    assert first == [tab.run_dir.name, "zzz-older"], "newest first"
    assert tab.gpu_panel.value_text("memory") == "—", "no process to read the RAM of once the run ended"


# ---------------------------------------------------------------- 2. Continue with DPO, on every tab at once


def test_continue_with_dpo_names_the_source_run_drops_the_sft_reading_and_shows_the_init_adapter(
        qtbot, make_window, trained_run, demo_assets, tmp_path):
    store = RunStore(tmp_path / "runs")
    shutil.copytree(trained_run, store.root / "sft-demo")
    win = make_window(store)
    assert win._load_config_file(store.root / "sft-demo" / "run.toml")
    dataset = win.dataset_tab
    qtbot.waitUntil(lambda: dataset.data is not None and not dataset.is_loading(), timeout=60_000)
    chat_file = win.config.data.train_file
    win.runs_view.refresh_now()
    win.runs_view.select_runs(["sft-demo"])

    win.runs_view.continue_selected("dpo")

    assert "sft-demo" in win.banner.text() and "DPO" in win.banner.text(), win.banner.text()
    assert "run ." not in win.banner.text()
    # The SFT reading of the chat file is not shown as the DPO run's data.
    assert dataset.data is None and dataset.source_edit.text() == ""
    assert "chosen" in dataset.summary_label.text(), dataset.summary_label.text()
    # The Config tab says which adapter the run starts from.
    assert "Starts from the adapter of run sft-demo" in win.config_tab.method_note.text()

    # Re-opening the chat file reads it for DPO, and the Columns panel says so in whole sentences.
    dataset.session.open(chat_file)
    qtbot.waitUntil(lambda: dataset.data is not None and not dataset.is_loading(), timeout=60_000)
    assert dataset.session.data_method == "dpo"
    evidence = dataset.mapping_panel.evidence_label.text()
    assert "not recognised" in evidence and ". ." not in evidence and "  " not in evidence, evidence


# ----------------------------------------------------------- a run has a name the user chose (issue 22, build 6)


def test_the_run_name_follows_the_data_and_model_until_typed_and_a_name_in_use_says_so(qtbot, make_window,
                                                                                       demo_assets, tmp_path):
    import studio

    store = RunStore(tmp_path / "runs")
    (store.root / "calls-tr-model").mkdir(parents=True)  # a name in use
    (store.root / "calls-tr-model" / "notes.txt").write_text("mine", encoding="utf-8")
    calls = tmp_path / "calls-tr.jsonl"
    shutil.copyfile(demo_assets.dataset_path, calls)
    win = make_window(store)
    assert win._load_config_file(demo_assets.config_path)
    tab = win.training_tab
    assert tab.name_edit.text() == "demo", "the demo config's own name"

    win.dataset_tab.session.open(str(calls))  # other data: the demo's name no longer describes the run
    assert tab.name_edit.text() == "" and tab.name_edit.placeholderText() == "calls-tr-model"
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    assert tab.run_dir is not None and tab.run_dir.name == "calls-tr-model-2"
    assert "A run named calls-tr-model already exists: this run is calls-tr-model-2." in tab.status_label.text()
    assert (store.root / "calls-tr-model" / "notes.txt").read_text(encoding="utf-8") == "mine"
    tab.supervisor.kill()
    tab.supervisor.wait()

    qtbot.keyClicks(tab.name_edit, "turkish-calls")
    assert win.config.name == "turkish-calls"
    win.dataset_tab.session.open(str(demo_assets.dataset_path))
    assert win.config.name == "turkish-calls", "a typed name stays when the data changes"
    assert f"Finetune Studio {studio.__version__}" in win.about_text()
