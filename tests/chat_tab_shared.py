"""What tests/ui/tabs/test_chat_tab.py and tests/slow/test_chat_tab_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import pytest


LOAD_TIMEOUT_MS = 120_000


@pytest.fixture
def tab(qtbot, tmp_path):
    from studio.ui.tabs.chat_tab import QtChatTab

    from studio.core.runs.store import RunStore
    from studio.core.sessions.runs import RunsSession

    tab = QtChatTab(runs=RunsSession(RunStore(tmp_path / "runs")))
    tab.gpu_info = lambda: None  # the CPU path, whatever machine runs the tests
    qtbot.addWidget(tab)
    tab.resize(1160, 700)
    tab.show()
    yield tab
    tab.shutdown()
    tab.unload_model()
