"""'Continue with…' in the Runs view: a finished SFT run's adapter trained further with another method."""

from __future__ import annotations

import shutil

import pytest

from studio.core.runs.store import RunStore


@pytest.fixture
def view(qtbot, trained_run, tmp_path):
    from studio.ui.tabs.runs_view import QtRunsView

    store = RunStore(tmp_path / "runs")
    shutil.copytree(trained_run, store.root / "sft-demo")
    view = QtRunsView(store)
    qtbot.addWidget(view)
    view.refresh_now()
    return view


def _select(view, name):
    for row in range(view.table.rowCount()):
        if view.table.item(row, 0).text() == name:
            view.table.selectRow(row)
            return
    raise AssertionError(f"no row {name}")


def test_continue_with_dpo_opens_a_config_that_trains_the_runs_adapter_on_preference_data(qtbot, view):
    assert not view.continue_button.isEnabled()  # nothing selected
    _select(view, "sft-demo")
    assert view.continue_button.isEnabled()
    labels = [action.text() for action in view.continue_button.menu().actions()]
    assert labels[0].startswith("SFT") and labels[1:4] == ["DPO", "ORPO", "KTO"] and labels[4].startswith("GRPO")
    with qtbot.waitSignal(view.open_config_requested, timeout=5_000) as opened:
        view.continue_button.menu().actions()[1].trigger()
    config = opened.args[0]
    assert config.training.method == "dpo"
    assert config.model.init_adapter == str((view.store.root / "sft-demo").resolve())
    assert config.data.train_file == "" and config.name == ""  # an SFT run's chat data holds no pairs
    assert "prompt/chosen/rejected" in view.info_label.text()


def test_continue_with_grpo_keeps_the_runs_data(qtbot, view):
    _select(view, "sft-demo")
    config = view.continue_selected("grpo")
    assert config is not None and config.training.method == "grpo" and config.data.train_file


def test_a_run_without_a_finished_adapter_cannot_be_continued(qtbot, view):
    _select(view, "sft-demo")
    shutil.rmtree(view.store.root / "sft-demo" / "adapter")
    assert view.continue_selected("dpo") is None
    assert view.info_label.text().startswith("Cannot continue this run:")
    assert "model.init_adapter" in view.info_label.text()


def test_the_config_tab_says_why_a_continuation_trains_gentler(qtbot, view, trained_run, tmp_path, monkeypatch):
    from studio.core.config.settings import load_config
    from studio.ui.tabs.config_tab import QtConfigTab

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    sft = load_config(trained_run / "run.toml")
    _select(view, "sft-demo")
    tab = QtConfigTab(gpu=None)
    qtbot.addWidget(tab)
    tab.set_config(view.continue_selected("dpo"))
    assert tab.learning_rate.value() == pytest.approx(sft.training.learning_rate / 10)
    assert tab.dpo_sft_weight.value() == 1.0
    note = tab.method_note.text()
    assert note.startswith("Reads prompt / chosen / rejected records")  # the method's data line stays first
    assert "Continuing an adapter" in note and "a tenth of that rate and Supervised weight 1" in note

    tab.set_config(view.continue_selected("orpo"))
    assert tab.learning_rate.value() == pytest.approx(sft.training.learning_rate)
    assert "ORPO's loss has its own supervised term" in tab.method_note.text()

    tab.set_config(sft)  # no adapter continued: no such note
    tab.method.setCurrentIndex(tab.method.findData("dpo"))
    assert "Continuing" not in tab.method_note.text()
