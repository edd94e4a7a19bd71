"""The real window, end to end with the offline demo: train, watch the curve, chat; and a killed run."""

from __future__ import annotations

import json
import os
import signal

import pytest
from PySide6.QtCore import QCoreApplication, QSettings, Qt

from studio.core.runs.events import read_events
from studio.core.system.gpu import HostTelemetry
from studio.core.runs.store import RunStore


TRAINING_TIMEOUT_MS = 300_000


@pytest.fixture
def studio_home(tmp_path_factory, monkeypatch, qapp):
    """A private user data folder and Qt settings store, shared by the tests of this module."""
    home = tmp_path_factory.getbasetemp() / "ui-studio-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(home))
    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(home / "qt-settings"))
    return home


@pytest.fixture
def window(qtbot, studio_home):
    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)  # every test starts as a first launch
    win = QtMainWindow(store=RunStore(studio_home / "runs"), telemetry=HostTelemetry())
    qtbot.addWidget(win)
    win.show()
    # First launch: the demo is built (or found) and preselected without the user doing anything.
    qtbot.waitUntil(lambda: win.config.model.name_or_path.endswith("model"), timeout=120_000)
    yield win
    if win.training_tab.is_running:
        win.training_tab.supervisor.kill()
        win.training_tab.supervisor.wait()
    win.training_tab.shutdown()
    win.chat_tab.shutdown()


def _demo_answers(win) -> dict[str, str]:
    answers = {}
    for line in open(win.config.data.train_file, encoding="utf-8"):
        messages = json.loads(line)["messages"]
        answers[messages[0]["content"]] = messages[1]["content"]
    return answers


def test_demo_trains_from_start_button_and_chat_replies_with_trained_answer(qtbot, window):
    tab = window.training_tab
    assert window.tabs.currentWidget() is tab, "the demo is offered ready to start"
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=TRAINING_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()

    steps = [e for e in read_events(tab.run_dir.events_path) if e["event"] == "step"]
    assert steps, "the run logged steps"
    xs, ys = tab.loss_plot.train_points()
    assert tab.loss_plot.train_point_count == len(steps), "one point per logged step"
    assert list(xs) == [e["step"] for e in steps]
    assert ys[-1] < ys[0], "the loss went down"
    assert tab.save_adapter_button.isEnabled() and tab.merge_button.isEnabled()

    window.tabs.setCurrentWidget(window.chat_tab)
    chat = window.chat_tab
    assert chat.adapter_edit.text() == str(tab.run_dir.adapter_dir), "chat is prefilled with the new adapter"
    with qtbot.waitSignal(chat.model_loaded, timeout=120_000):
        qtbot.mouseClick(chat.load_button, Qt.MouseButton.LeftButton)
    question, answer = next(iter(_demo_answers(window).items()))
    pieces = []
    chat.piece_received.connect(pieces.append)
    with qtbot.waitSignal(chat.reply_finished, timeout=120_000) as reply:
        chat.prompt_edit.setText(question)
        qtbot.keyClick(chat.prompt_edit, Qt.Key.Key_Return)
    assert reply.args[0] == answer
    assert len(pieces) > 1, "the reply arrived in pieces (streamed)"
    assert answer in chat.transcript.toPlainText()

    # Save the adapter and merge it into the base, each to a chosen folder.
    saved = tab.save_adapter_to(window.store.root.parent / "exported-adapter")
    assert (saved / "adapter_model.safetensors").is_file() and (saved / "tokenizer_config.json").is_file()
    merged_dir = window.store.root.parent / "merged-model"
    worker = tab.merge_to(merged_dir)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert "MERGED" in tab.status_label.text() and "merged model written to" in tab.status_label.text()
    assert (merged_dir / "config.json").is_file() and (merged_dir / "tokenizer_config.json").is_file()
    assert list(merged_dir.glob("*.safetensors")), "merged weights saved as safetensors"


def test_bad_data_is_refused_at_start_with_the_line_and_no_run(qtbot, window, tmp_path):
    """Issue 21 item 16: the preflight reads the data as the run would, so a bad row is a one-line refusal at
    Start in the window's words, not a `failed (data)` run in the history."""
    bad = tmp_path / "bad.jsonl"
    good_line = open(window.config.data.train_file, encoding="utf-8").readline()
    bad.write_text(good_line + '{"messages": [{"role": "user", "content": "hi"}\n', encoding="utf-8")
    window.config.data.train_file = str(bad)
    tab = window.training_tab
    runs_before = sorted(window.store.root.iterdir()) if window.store.root.exists() else []
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    text = tab.status_label.text()
    assert "NOT STARTED" in text and f"Cannot start: {bad}:2:" in text, text
    assert "tick Skip bad rows when training on the Dataset tab" in text
    assert not tab.is_running and tab.run_dir is None
    assert (sorted(window.store.root.iterdir()) if window.store.root.exists() else []) == runs_before


def test_killed_child_shows_failed_with_reason_and_keeps_events(qtbot, window):
    tab = window.training_tab
    window.config.training.max_steps = 400  # long enough that the kill lands mid-run
    window.config_tab.set_config(window.config)
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.loss_plot.train_point_count >= 2, timeout=TRAINING_TIMEOUT_MS)
    events_before = read_events(tab.run_dir.events_path)

    os.kill(tab.supervisor.pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=60_000)

    assert tab.last_status == "failed"
    assert "ended unexpectedly" in tab.status_label.text() and "killed by SIG" in tab.status_label.text()
    assert tab.start_button.isEnabled(), "the window is ready for another run"
    events_after = read_events(tab.run_dir.events_path)
    assert events_after[: len(events_before)] == events_before, "every event written before the kill is kept"
    assert events_after[-1]["event"] == "failed" and events_after[-1]["kind"] == "crash"
    assert RunStore(tab.store.root).runs()[0].status() == "failed"
    # Still responsive: switching tabs and editing a field work after the failure.
    window.tabs.setCurrentWidget(window.config_tab)
    window.config_tab.r.setValue(8)
    assert window.config.lora.r == 8


def test_closing_during_a_run_asks_and_stop_saves_the_adapter(qtbot, window, monkeypatch):
    tab = window.training_tab
    window.config.training.max_steps = 400
    window.config_tab.set_config(window.config)
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.loss_plot.train_point_count >= 1, timeout=TRAINING_TIMEOUT_MS)
    asked = []
    monkeypatch.setattr(tab, "ask_close_choice", lambda: asked.append(True) or "stop")
    from PySide6.QtCore import QTimer

    ticks = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(1))
    heartbeat.start(20)

    window.close()

    heartbeat.stop()
    assert ticks, "the window kept processing events while the run saved and stopped"
    assert asked, "closing asked what to do with the run"
    events = read_events(tab.run_dir.events_path)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "stopped"
    assert (tab.run_dir.adapter_dir / "adapter_model.safetensors").is_file()
    assert tab.run_dir.latest_checkpoint() is not None


def test_a_restart_restores_the_settings_and_offers_the_newest_adapter_of_that_base(qtbot, studio_home, tmp_path):
    from studio.core.config.settings import RunConfig, save_config
    from studio.ui.main_window import QtMainWindow, last_config_path

    base = tmp_path / "base-model"
    store = RunStore(studio_home / "restart-runs")
    adapters = {}
    for name, model in (("older", base), ("other-base", tmp_path / "another-model"), ("newest", base)):
        run = store.new_run(name)
        config = RunConfig(name=name)
        config.model.name_or_path = str(model)
        save_config(config, run.config_path)
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text("{}")
        adapters[name] = run.adapter_dir
        os.utime(run.path, (0, {"older": 1_000, "other-base": 3_000, "newest": 2_000}[name]))
    restored = RunConfig(name="mine")
    restored.model.name_or_path, restored.data.train_file = str(base), str(tmp_path / "chats.jsonl")
    restored.training.learning_rate = 1.5e-4
    save_config(restored, last_config_path())

    win = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(win)
    assert win.banner.text() == "Restored your last settings."
    assert win.config.training.learning_rate == 1.5e-4
    assert win.chat_tab.adapter_edit.text() == str(adapters["newest"]), "newest run on the same base model"
    win.chat_tab.shutdown()
    win.training_tab.shutdown()
    last_config_path().unlink()


def test_the_config_tab_shows_the_documented_defaults_before_any_config_is_loaded(qtbot, studio_home):
    from studio.core.config.settings import RunConfig
    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)
    win = QtMainWindow(store=RunStore(studio_home / "runs"), telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(win)
    shown = RunConfig()
    win.config_tab.apply_to(shown)
    defaults = RunConfig()
    assert (shown.lora.r, shown.training.learning_rate, shown.training.max_length) == \
        (defaults.lora.r, defaults.training.learning_rate, defaults.training.max_length)
    assert shown.lora.target_modules == defaults.lora.target_modules
    win.chat_tab.shutdown()
    win.training_tab.shutdown()


def test_the_first_launch_banner_stays_while_the_demo_data_is_read(qtbot, window):
    from studio.ui.main_window import DEMO_SELECTED

    qtbot.waitUntil(lambda: window.dataset_tab.data is not None and not window.dataset_tab.is_loading(),
                    timeout=60_000)
    assert window.banner.text().startswith(DEMO_SELECTED), window.banner.text()
    other = window.store.root.parent / "other.jsonl"
    other.write_text(open(window.config.data.train_file, encoding="utf-8").read(), encoding="utf-8")
    window.dataset_tab.dataset_chosen.emit(other)  # the user opens other data
    assert window.banner.text() == ""


def test_deleting_a_run_clears_it_from_the_training_and_chat_tabs(qtbot, studio_home, tmp_path):
    from studio.core.config.settings import RunConfig, save_config
    from studio.ui.main_window import QtMainWindow

    store = RunStore(tmp_path / "runs")
    run = store.new_run("doomed")
    save_config(RunConfig(name="doomed"), run.config_path)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    win = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(win)
    win.training_tab.run_dir = run  # as after that run ended
    win.training_tab.save_adapter_button.setEnabled(True)
    win.chat_tab.set_model("some-base", run.adapter_dir)
    win.runs_view.refresh_now()
    win.runs_view.select_runs(["doomed"])
    win.runs_view.ask_delete_choice = lambda names: True

    assert win.runs_view.delete_selected() == ["doomed"]
    assert win.training_tab.run_dir is None and not win.training_tab.save_adapter_button.isEnabled()
    assert "was deleted" in win.training_tab.status_label.text()
    assert win.chat_tab.adapter_edit.text() == ""
    win.chat_tab.shutdown()
    win.training_tab.shutdown()
