"""The main window without training: its size on small screens, the Help menu, the status bar's texts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QRect, QSettings, QUrl
from PySide6.QtGui import QDesktopServices

from studio.core.system.gpu import HostTelemetry
from studio.core.runs.store import RunStore


@pytest.fixture
def make_window(qtbot, tmp_path, qt_settings):
    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)
    made = []

    def make():
        win = QtMainWindow(store=RunStore(tmp_path / "runs"), telemetry=HostTelemetry(), offer_demo=False)
        qtbot.addWidget(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.training_tab.shutdown()
        win.chat_tab.shutdown()


# --------------------------------------------------------------------------------------------- size


def test_the_window_fits_the_screen_it_opens_on(make_window):
    from studio.ui.main_window import FRAME_ALLOWANCE

    win = make_window()
    # The offscreen test screen is 800x800: the 780-pixel default plus a title bar would not fit it.
    available = win.screen().availableGeometry()
    assert win.height() + FRAME_ALLOWANCE.height() <= available.height(), (win.size(), available)


@pytest.mark.parametrize("screen", [QRect(0, 0, 1366, 728), QRect(0, 32, 1366, 736), QRect(0, 0, 1280, 680)])
def test_on_a_laptop_screen_the_whole_window_and_its_status_bar_are_on_screen(make_window, screen):
    from studio.ui.main_window import FRAME_ALLOWANCE

    win = make_window()
    win.fit_to_screen(screen)
    assert win.width() <= screen.width() and win.height() + FRAME_ALLOWANCE.height() <= screen.height()
    assert win.x() >= screen.left() and win.y() >= screen.top()
    assert win.y() + win.height() + FRAME_ALLOWANCE.height() <= screen.bottom() + 1
    win.show()
    bar = win.statusBar()
    assert bar.isVisible() and bar.geometry().bottom() <= win.height()


def test_a_large_screen_gets_the_default_size_centred(make_window):
    from studio.ui.main_window import DEFAULT_SIZE

    win = make_window()
    win.fit_to_screen(QRect(0, 0, 1920, 1080))
    assert win.size() == DEFAULT_SIZE
    assert abs((win.x() + win.width() / 2) - 960) < 20


def test_a_saved_geometry_is_restored_instead(qtbot, make_window):
    first = make_window()
    first.show()
    qtbot.waitExposed(first)
    first.setGeometry(first.x() + 10, first.y() + 20, first.width(), 610)  # shorter than the fitted size
    saved = first.geometry()
    first.close()
    assert QSettings().value("window/geometry") is not None
    second = make_window()
    # The height is the user's (the fitted one would be 752); restoreGeometry keeps the width within the
    # 800-pixel test screen, narrower than the window's minimum.
    assert second.height() == saved.height() == 610


# --------------------------------------------------------------------------------------------- Help


@pytest.fixture
def opened(monkeypatch):
    urls: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: urls.append(url) or True))
    return urls


def test_the_help_menu_opens_the_readme_the_settings_reference_and_the_runs_folder(make_window, opened):
    win = make_window()
    help_menu = next(action.menu() for action in win.menuBar().actions() if action.text() == "&Help")
    texts = [action.text() for action in help_menu.actions()]
    assert "Getting started (README)" in texts and "Settings reference (CONFIG.md)" in texts
    assert any("runs folder" in text for text in texts) and any(text.startswith("About") for text in texts)

    for key in ("README.md", "docs/CONFIG.md"):
        win.help_actions[key].trigger()
        path = Path(opened[-1].toLocalFile())
        assert opened[-1].isLocalFile() and path.is_file() and path.as_posix().endswith(key), opened[-1]
    assert "## Using the studio" in Path(opened[0].toLocalFile()).read_text(encoding="utf-8")

    win.open_runs_folder_action.trigger()
    assert Path(opened[-1].toLocalFile()) == win.store.root and win.store.root.is_dir()


def test_an_installed_studio_without_the_docs_opens_them_on_the_homepage(make_window, opened, monkeypatch):
    import studio.core.system.paths as paths

    monkeypatch.setattr(paths.Path, "is_file", lambda self: False)  # as in site-packages: no pyproject, no docs
    assert paths.document_location("docs/CONFIG.md").endswith("/blob/main/docs/CONFIG.md")
    assert paths.document_location("README.md").startswith("https://")


def test_an_installed_studio_opens_the_settings_reference_offline_from_its_own_code(make_window, opened, monkeypatch):
    import studio.core.config.docs as docs

    win = make_window()
    monkeypatch.setattr(docs, "document_location", lambda name: "https://example.org/blob/main/" + name)  # a wheel
    win.help_actions["docs/CONFIG.md"].trigger()
    path = Path(opened[-1].toLocalFile())
    assert opened[-1].isLocalFile() and path.name == "CONFIG.md" and docs.DOCS_PATH != path
    assert path.read_text(encoding="utf-8") == docs.render_reference()  # what the installed code accepts, not a stale copy
    assert "## `[lora]`" in path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------- texts


def test_a_starting_run_replaces_the_demo_hint_and_an_earlier_runs_ending(make_window):
    from studio.ui.main_window import DEMO_SELECTED

    win = make_window()
    run = win.store.new_run("demo-2")
    for stale in (f"{DEMO_SELECTED}: a tiny model… Press Start training.", "Run demo-1: stopped."):
        win.banner.setText(stale)
        win.training_tab.run_started.emit(run)
        assert win.banner.text() == ""


def test_the_preparation_phases_show_as_they_come_and_the_memory_panel_follows_the_process_at_once(make_window,
                                                                                                  monkeypatch):
    import os
    from types import SimpleNamespace

    win = make_window()
    tab = win.training_tab
    monkeypatch.setattr(tab, "supervisor", SimpleNamespace(pid=os.getpid(), stopping=False))  # the child's events
    tab.handle_event({"event": "log", "time": 1.0, "pid": os.getpid(), "message": "Training process started"})
    assert tab.gpu_panel.pid == os.getpid(), "watched from the process's first event, not from its first step"
    tab.handle_event({"event": "log", "time": 2.0, "message": "Importing PyTorch, transformers and TRL",
                      "phase": "libraries"})
    assert tab.status_label.text().endswith("Preparing the run (2 of 5): Importing PyTorch, transformers and TRL")
    tab.handle_event({"event": "log", "time": 9.0, "message": "Loading demo/model", "phase": "model"})
    assert tab.status_label.text().endswith("Preparing the run (5 of 5): Loading demo/model")
    tab.grab().save("/tmp/h3-phases.png")
    monkeypatch.undo()  # before the window closes: closing asks the supervisor whether it still runs


def test_the_eval_split_and_the_eval_schedule_tell_one_truth(make_window):
    from studio.core.config.settings import RunConfig

    win = make_window()
    config = RunConfig()
    config.model.name_or_path = "acme/tiny"
    config.training.eval_strategy, config.training.eval_steps = "steps", 50
    win.set_config(config)
    split, schedule = win.dataset_tab.split_panel.counts_label, win.config_tab.eval_summary

    def both() -> tuple[str, str]:
        return split.text(), schedule.text()

    # Before: the split said "No evaluation" while Advanced said "every 50 steps".
    assert all(text.startswith("No evaluation: no eval rows") for text in both()), both()
    win.dataset_tab.split_panel.fraction_radio.setChecked(True)  # the user holds out a fraction
    assert all(text.endswith("Evaluated every 50 steps.") for text in both()), both()
    win.config_tab.eval_strategy.setCurrentIndex(win.config_tab.eval_strategy.findData("no"))
    assert all(text.endswith("No evaluation: Evaluate is set to never (Config tab, Advanced).") for text in both())
