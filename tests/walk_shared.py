"""What tests/ui/test_walk.py and tests/slow/test_walk_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import pytest
from studio.core.runs.store import RunStore
from studio.core.system.gpu import HostTelemetry


@pytest.fixture
def make_window(qtbot, tmp_path, qt_settings):
    """`make_window(store=None)`: the real window at a first launch (no last config), shut down after the test."""
    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)
    made = []

    def make(store: RunStore | None = None, *, clean: bool = True):
        if clean:
            last_config_path().unlink(missing_ok=True)
        win = QtMainWindow(store=store or RunStore(tmp_path / "runs"), telemetry=HostTelemetry(), offer_demo=False)
        win.chat_tab.gpu_info = lambda: None  # the CPU path, whatever machine runs the tests
        qtbot.addWidget(win)
        made.append(win)
        return win

    yield make
    for win in made:
        if win.training_tab.is_running:
            win.training_tab.supervisor.kill()
            win.training_tab.supervisor.wait()
        win.close()
        win.training_tab.shutdown()
        win.chat_tab.shutdown()
        win.chat_tab.unload_model()
        win.config_tab.shutdown()
    last_config_path().unlink(missing_ok=True)
