"""The Chat tab with the trained demo: compare mode, Stop, adapters on one base, memory, conversations, export."""

from __future__ import annotations

import json
from pathlib import Path


from studio.core.system.gpu import GpuInfo
from chat_tab_shared import LOAD_TIMEOUT_MS, tab  # noqa: F401  (shared with the other half)





def test_loading_while_a_run_trains_on_the_gpu_warns_with_the_estimated_need(qtbot, tab, demo_assets):
    asked = []
    tab.gpu_info = lambda: GpuInfo(name="RTX 4060", total_bytes=8 * 1024**3, free_bytes=600 * 1024**2)
    tab.training_running = lambda: True
    tab.confirm_memory_warning = lambda warning: asked.append(warning) or False
    tab.set_model(str(demo_assets.model_dir))

    assert tab.load_model() is None

    assert len(asked) == 1
    assert "training run is using RTX 4060" in asked[0] and "needs about" in asked[0]
    assert tab.chat_model is None and tab.model_status.text().startswith("Not loaded")

    # On a CPU there is no GPU to share: no warning, the model loads.
    tab.gpu_info = lambda: None
    with qtbot.waitSignal(tab.model_loaded, timeout=LOAD_TIMEOUT_MS):
        tab.load_model()
    assert len(asked) == 1 and tab.last_memory_warning is None


def test_a_run_still_training_in_the_history_counts_as_holding_the_gpu(tab, tmp_path):
    import os

    from studio.core.runs.events import EventWriter, make_event
    from studio.core.runs.store import RunStore

    assert not tab.training_running()
    run = RunStore(tmp_path / "runs").new_run("busy")
    writer = EventWriter(run.events_path)
    writer.write(make_event("log", level="info", message="Training process started", pid=os.getpid()))
    writer.close()
    tab.runs.refresh_now()  # the runs session's next scan (the window's, when the folder changes) sees it
    assert tab.training_running()


# ------------------------------------------------------------------ layout in a 1024x640 window
TAB_AT_1024 = (1006, 560)


def test_the_runs_button_has_room_for_its_text_and_menu_arrow(qtbot, tab):
    from PySide6.QtWidgets import QStyle

    tab.resize(*TAB_AT_1024)
    qtbot.wait(50)
    button = tab.runs_button
    assert button.menu() is tab.runs_menu
    style = button.style()
    needed = (button.fontMetrics().horizontalAdvance(button.text())
              + style.pixelMetric(QStyle.PixelMetric.PM_MenuButtonIndicator, None, button)
              + 2 * style.pixelMetric(QStyle.PixelMetric.PM_ButtonMargin, None, button))
    assert button.sizeHint().width() >= needed and button.width() >= needed


def test_the_transcript_placeholder_wraps_instead_of_being_cut_off(qtbot, tab):
    from PySide6.QtWidgets import QTextEdit

    tab.resize(*TAB_AT_1024)
    qtbot.wait(50)
    transcript = tab.transcript
    text = transcript.placeholderText()
    viewport = transcript.viewport()
    metrics = transcript.fontMetrics()
    assert metrics.horizontalAdvance(text) > viewport.width(), "the test needs a placeholder longer than the view"
    assert QTextEdit.placeholderText(transcript) == "", "Qt's own one-line placeholder is not drawn"

    image = viewport.grab().toImage()
    margin = int(transcript.document().documentMargin())
    background = image.pixelColor(image.width() - 3, image.height() - 3)

    def ink(top: int, bottom: int) -> bool:
        return any(image.pixelColor(x, y) != background
                   for y in range(top, bottom) for x in range(margin, image.width() - margin))

    line = metrics.lineSpacing()
    assert ink(margin, margin + line), "the first line is drawn"
    assert ink(margin + line, margin + 2 * line), "the rest wraps onto a second line"
    assert not ink(margin + 3 * line, margin + 4 * line)

    tab.transcript.add_message("user", "hello")
    qtbot.wait(20)
    assert tab.transcript.document().toPlainText() == "You: hello"


def _fake_loader(monkeypatch, release=None):
    """ChatModel.load replaced by a stand-in (no weights): records each load, waits for `release` if given."""
    from types import SimpleNamespace

    from studio.core.chat import model as chat

    loads = []

    def fake_load(base, adapters, **kwargs):
        loads.append((base, list(adapters)))
        if release is not None:
            release.wait(30)
        names = [f"adapter-{len(a)}" for a in adapters]
        return SimpleNamespace(base_name=base, adapters=names, load_in_4bit=False,
                               active_adapter=names[0] if names else None, unload=lambda: None,
                               adapter_paths=dict(zip(names, map(Path, adapters))), loaded_as="16-bit", notes=[])

    monkeypatch.setattr(chat.ChatModel, "load", staticmethod(fake_load))
    return loads


def test_an_adapter_filled_in_while_the_base_loads_is_what_gets_loaded(qtbot, tab, monkeypatch, tmp_path):
    # Load pressed a moment before a finished run filled in its adapter: the base alone loaded while the
    # field showed the adapter, and the chat answered as the untrained base (issue 12, item 13).
    import threading

    release = threading.Event()
    loads = _fake_loader(monkeypatch, release)
    tab.set_model("base-model")
    tab.load_model()
    qtbot.waitUntil(lambda: loads == [("base-model", [])])
    tab.set_model("base-model", tmp_path / "run" / "adapter")  # the run has ended meanwhile
    release.set()
    qtbot.waitUntil(lambda: len(loads) == 2, timeout=10_000)
    assert loads[1] == ("base-model", [str(tmp_path / "run" / "adapter")])
    qtbot.waitUntil(lambda: tab.model_status.text().startswith("Loaded"), timeout=10_000)
    assert "no adapter" not in tab.model_status.text()


def test_a_second_turn_says_when_the_adapter_only_learned_one_turn_conversations(qtbot, tab, monkeypatch, tmp_path):
    from studio.core.config.settings import RunConfig, save_config

    run = tmp_path / "runs" / "one-turn"
    (run / "adapter").mkdir(parents=True)
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    config = RunConfig()
    config.data.train_file = str(data)
    save_config(config, run / "run.toml")
    _fake_loader(monkeypatch)
    monkeypatch.setattr(tab, "_generate", lambda: None)  # the replies do not matter here
    tab.set_model("base-model", run / "adapter")
    with qtbot.waitSignal(tab.model_loaded, timeout=10_000):
        tab.load_model()
    tab.send("Where is my order?")
    assert not tab.turn_hint.isVisible(), "the first turn is what it was trained on"
    tab.history.append({"role": "assistant", "content": "On its way."})
    tab.send("And the other one?")
    assert tab.turn_hint.isVisible() and "one-turn conversations" in tab.turn_hint.text()
    tab.grab().save("/tmp/h3-chat-turn-hint.png")
    tab.clear()
    assert not tab.turn_hint.isVisible()
