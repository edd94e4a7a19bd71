"""The Training tab's Start runs the same preflight as `finetune-studio train` (issue 21, item 16): what the run
would refuse is one line in the tab, in the window's words, and no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QSettings

from studio.core.config.settings import load_config
from studio.core.runs.store import RunStore
from studio.core.system.gpu import HostTelemetry


@pytest.fixture
def tab(qtbot, tmp_path, qapp):
    from studio.ui.tabs.training_tab import QtTrainingTab

    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qt-settings"))
    widget = QtTrainingTab(RunStore(tmp_path / "runs"), HostTelemetry())
    qtbot.addWidget(widget)
    yield widget
    if widget.is_running:  # only where the preflight let a run start (as it did before): no child outlives the test
        widget.supervisor.kill()
        widget.supervisor.wait()
    widget.shutdown()


def test_start_refuses_bad_rows_and_a_bad_reward_in_one_line_without_a_run(tab, tmp_path, demo_assets):
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_bytes(Path(demo_assets.dataset_path).read_bytes() + b'{"messages": 5}\n')
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(bad_rows)

    assert tab.start(config) is None
    text = tab.status_label.text()
    assert "Cannot start: " in text and "NOT STARTED" in text
    assert (f"{bad_rows}:11: 'messages' must be a list; 1 bad row in all: fix or remove it, or tick Skip bad rows "
            "when training on the Dataset tab to train on the others") in text, text
    assert "--skip-bad-rows" not in text
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    config = load_config(demo_assets.config_path)
    config.training.method, config.training.num_generations = "grpo", 2
    config.training.rewards = ["no_such_metric=1.0"]
    assert tab.start(config) is None
    assert "Cannot start: training.rewards = " in tab.status_label.text()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
