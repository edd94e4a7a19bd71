"""The window's runs: one scan of the runs folder per refresh feeds the Runs view, Evaluate and Chat, off the GUI
thread, and a run another process makes shows in each of them through the runs session alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.core.config.settings import RunConfig, save_config
from studio.core.runs.events import EventWriter, make_event
from studio.core.runs.store import RunDirectory, RunStore
from studio.core.system.gpu import HostTelemetry
import studio.ui.tabs

SCAN_TIMEOUT_MS = 15_000


def _finished_run(store: RunStore, name: str) -> RunDirectory:
    run = store.new_run(name)
    config = RunConfig(name=name)
    config.model.name_or_path = "tiny-base"
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        writer.write(make_event("started", total_steps=1, start_step=0, pid=1))
        writer.write(make_event("step", step=1, loss=1.0))
        writer.write(make_event("finished", status="completed", step=1, final_loss=1.0))
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    return run


# A finished run written by another process (as `finetune-studio train` in a terminal would leave one), built
# beside the runs and moved in whole, so the window never reads half of it.
OTHER_PROCESS = """
import sys
from pathlib import Path
from studio.core.config.settings import RunConfig, save_config
from studio.core.runs.events import EventWriter, make_event
from studio.core.runs.store import RunDirectory

root, name = Path(sys.argv[1]), sys.argv[2]
staging = RunDirectory(root / ("." + name))
staging.path.mkdir()
config = RunConfig(name=name)
config.model.name_or_path = "tiny-base"
save_config(config, staging.config_path)
with EventWriter(staging.events_path) as writer:
    writer.write(make_event("started", total_steps=1, start_step=0, pid=1))
    writer.write(make_event("finished", status="completed", step=1, final_loss=1.0))
staging.adapter_dir.mkdir()
(staging.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
staging.path.rename(root / name)
"""


@pytest.fixture
def store(tmp_path):
    store = RunStore(tmp_path / "runs")
    _finished_run(store, "first")
    time.sleep(0.02)
    _finished_run(store, "second")
    return store


@pytest.fixture
def make_window(qtbot, qt_settings, store):
    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)
    made = []

    def make():
        win = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
        qtbot.addWidget(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.close()


def _runs_view_names(win) -> list[str]:
    table = win.runs_view.table
    return sorted(table.item(row, 0).text() for row in range(table.rowCount()))


def _evaluate_names(win) -> list[str]:
    runs = win.evaluate_tab.runs_list
    return sorted(runs.item(i).text() for i in range(runs.count()))


def _chat_menu_names(win) -> list[str]:
    win.chat_tab._fill_runs_menu()
    return sorted(action.text() for action in win.chat_tab.runs_menu.actions())


def _settle(qtbot, win) -> None:
    """Past the folder watch's debounce and any scan it asked for."""
    from studio.ui.main_window import RESCAN_DEBOUNCE_MS

    qtbot.wait(2 * RESCAN_DEBOUNCE_MS)
    qtbot.waitUntil(lambda: not win._runs_tasks.busy, timeout=SCAN_TIMEOUT_MS)


def test_one_scan_of_the_runs_folder_per_refresh_feeds_every_tab_off_the_gui_thread(qtbot, make_window, store,
                                                                                   monkeypatch):
    listings: list[str] = []
    original = RunStore.runs

    def counted(self):
        listings.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(RunStore, "runs", counted)
    win = make_window()
    assert len(listings) == 1, "one scan at launch (it decides the re-attach and the Chat's adapter)"
    assert _runs_view_names(win) == _evaluate_names(win) == _chat_menu_names(win) == ["first", "second"]
    assert win.chat_tab.adapter_edit.text() == "", "the draft's base is not the runs' base: nothing offered"

    # Refresh: one listing, on a worker thread.
    with qtbot.waitSignal(win.runs_view.refreshed, timeout=SCAN_TIMEOUT_MS):
        win.runs_view.refresh_button.click()
    _settle(qtbot, win)
    assert len(listings) == 2 and listings[1] != threading.main_thread().name, listings

    # A run folder made on disk: the folder watch asks for one scan, and every tab shows its result.
    _finished_run(store, "third")
    qtbot.waitUntil(lambda: "third" in _evaluate_names(win), timeout=SCAN_TIMEOUT_MS)
    _settle(qtbot, win)
    assert _runs_view_names(win) == _evaluate_names(win) == _chat_menu_names(win) == ["first", "second", "third"]
    assert len(listings) == 3 and listings[2] != threading.main_thread().name, listings

    # A rename and a deletion in the Runs view reach Evaluate and Chat from the session, without a scan.
    win.runs_view.select_runs(["first"])
    win.runs_view.ask_new_name = lambda current: "renamed"
    assert win.runs_view.rename_selected() is not None
    assert _evaluate_names(win) == _chat_menu_names(win) == ["renamed", "second", "third"]
    win.runs_view.select_runs(["second"])
    win.runs_view.ask_delete_choice = lambda names: True
    assert win.runs_view.delete_selected() == ["second"]
    assert _runs_view_names(win) == _evaluate_names(win) == _chat_menu_names(win) == ["renamed", "third"]
    assert len(listings) == 3, "the rename and the deletion were told, not scanned for"
    _settle(qtbot, win)
    assert len(listings) == win.runs.scans, "every listing of the runs folder is the runs session's scan"


def test_a_run_another_process_makes_appears_in_the_runs_view_and_evaluate_through_the_session(
        qtbot, make_window, store):
    win = make_window()
    assert _evaluate_names(win) == ["first", "second"]
    # No tab knows another: the Runs view, Evaluate and Chat import no tab, and the Runs view has no signal
    # the window could hand a run's deletion or rename on with.
    for module in ("runs_view", "evaluate_tab", "chat_tab"):
        tree = ast.parse((Path(studio.ui.tabs.__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {name for name in imported if name.startswith("studio.ui.tabs")}, (module, imported)
    assert not hasattr(win.runs_view, "runs_deleted") and not hasattr(win.runs_view, "run_renamed")

    subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(store.root), "from-the-terminal"], check=True)

    # The runs folder changed: the window's watch asks the session to scan, and both tabs observe the session.
    qtbot.waitUntil(lambda: "from-the-terminal" in _evaluate_names(win), timeout=SCAN_TIMEOUT_MS)
    assert _runs_view_names(win) == ["first", "from-the-terminal", "second"]
    assert "from-the-terminal" in _chat_menu_names(win)


def test_a_run_that_ends_fills_chat_and_evaluate_from_the_session(qtbot, make_window, store):
    win = make_window()
    run = store.new_run("training-now")
    config = RunConfig(name="training-now")
    config.model.name_or_path = "tiny-base"
    save_config(config, run.config_path)
    win.training_tab.run_started.emit(run)
    assert win.runs_view.training_busy and "training-now" in _runs_view_names(win)
    assert "training-now" not in _evaluate_names(win), "no adapter yet"

    with EventWriter(run.events_path) as writer:
        writer.write(make_event("finished", status="completed", step=1, final_loss=1.0))
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    win.training_tab.run_ended.emit(run, "completed", "")

    assert not win.runs_view.training_busy
    assert "training-now" in _evaluate_names(win)
    assert win.chat_tab.base_edit.text() == "tiny-base"
    assert win.chat_tab.adapter_edit.text() == str(run.adapter_dir), "the run just trained answers the next Send"
    assert win.banner.text() == "Run training-now: completed."


def test_the_export_dialog_lists_the_sessions_runs_without_a_scan_of_its_own(qtbot, make_window, store,
                                                                             monkeypatch):
    listings: list[str] = []
    original = RunStore.runs

    def counted(self):
        listings.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(RunStore, "runs", counted)
    win = make_window()
    _settle(qtbot, win)
    before = len(listings)
    dialog = win.open_export_dialog()
    offered = [dialog.source_combo.itemText(i) for i in range(dialog.source_combo.count())]

    assert len(listings) == before, "the dialog lists no runs folder: the window's one scan gives it the runs"
    assert offered[:2] == ["second", "first"], "newest first, as the runs session holds them"
    dialog.close()
