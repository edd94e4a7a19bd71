"""Preference tuning and GRPO from the window's tabs: pick the method, see the pairs as they train, train the demo,
see the method's curves fill from the run's own events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QSettings

from studio.core.config.settings import load_config
from studio.core.runs.events import read_events
from studio.core.runs.store import RunStore
from studio.core.sessions.dataset import DatasetSession
from studio.core.sessions.draft import RunDraft
from studio.core.system.gpu import HostTelemetry


RUN_TIMEOUT_MS = 300_000


@pytest.fixture
def tabs(qtbot, tmp_path, demo_assets, qapp):
    """The Dataset, Config and Training tabs on one draft, as the window wires them, with the demo loaded."""
    from studio.ui.tabs.config_tab import QtConfigTab
    from studio.ui.tabs.dataset_tab import QtDatasetTab
    from studio.ui.tabs.training_tab import QtTrainingTab

    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qt-settings"))
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 4
    draft = RunDraft(config)
    dataset = QtDatasetTab(session=DatasetSession(draft))
    settings = QtConfigTab(gpu=None, draft=draft)
    training = QtTrainingTab(RunStore(tmp_path / "runs"), HostTelemetry())
    for widget in (dataset, settings, training):
        qtbot.addWidget(widget)
        widget.resize(1400, 820)
    yield dataset, settings, training
    if training.is_running:
        training.supervisor.kill()
        training.supervisor.wait()
    for widget in (dataset, settings, training):
        widget.shutdown()


def _pairs_file(demo_assets, folder: Path) -> Path:
    """The demo's questions with its answer as chosen and another question's answer as rejected, plus a bad pair."""
    rows = [json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    records = [{"prompt": m[0]["content"], "chosen": m[1]["content"], "rejected": rows[(i + 3) % len(rows)][1]["content"]}
               for i, m in enumerate(rows)]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _choose_method(settings, method: str) -> None:
    settings.method.setCurrentIndex(settings.method.findData(method))


def _train(qtbot, training, config) -> list[dict]:
    training.show()
    assert training.start(config) is not None
    qtbot.waitUntil(lambda: training.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert training.last_status == "completed", training.status_label.text()
    return [e for e in read_events(training.run_dir.events_path) if e["event"] == "step"]


def test_dpo_from_the_tabs_previews_the_pairs_trains_and_plots_the_margin(qtbot, tabs, demo_assets, tmp_path):
    dataset, settings, training = tabs
    settings.show()
    _choose_method(settings, "dpo")
    assert settings.draft.config.training.method == "dpo"
    assert settings.beta.isVisible() and not settings.rewards.isVisible(), "only DPO's own setting is shown"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."}\n{"prompt": "Hi?", "chosen": "Hello."}\n',
                   encoding="utf-8")
    dataset.show()
    with qtbot.waitSignal(dataset.loaded, timeout=60_000):
        dataset.open_path(bad)
    assert [str(issue) for issue in dataset.data.issues][0] == (
        f"{bad}:1: 'chosen' and 'rejected' are identical: there is nothing to prefer")

    with qtbot.waitSignal(dataset.loaded, timeout=60_000):
        dataset.open_path(_pairs_file(demo_assets, tmp_path))
    assert dataset.rows_model.HEADERS == ("Line", "Prompt", "Chosen", "Rejected")
    qtbot.waitUntil(lambda: dataset.rejected_view.isVisible() and dataset.preview is not None, timeout=120_000)
    first = json.loads(Path(dataset.settings.train_file).read_text(encoding="utf-8").splitlines()[0])
    assert first["chosen"] in dataset.token_view.plain_text() and first["prompt"] in dataset.token_view.plain_text()
    assert first["rejected"] in dataset.rejected_view.plain_text()
    trained = "".join(p.text for p in dataset.rejected_view.preview.pieces if p.trained)
    assert first["rejected"] in trained and first["prompt"] not in trained, "the reply trains, the prompt does not"
    dataset.grab().save(str(tmp_path / "preference-pair-preview.png"))

    steps = _train(qtbot, training, settings.draft.snapshot())
    assert all("rewards/margins" in e["metrics"] for e in steps)
    plots = training.metrics_plots.method_plots
    qtbot.waitUntil(lambda: plots.isVisible())
    xs, ys = plots.series("rewards/margins")
    assert xs == [float(e["step"]) for e in steps]
    assert ys == pytest.approx([e["metrics"]["rewards/margins"] for e in steps])
    assert set(plots.plots) == {"Reward margin", "Reward accuracy", "Log-probabilities"}, "DPO's, none of GRPO's"


def test_grpo_rewards_are_picked_on_the_config_tab_and_plotted_per_function(qtbot, tabs, demo_assets, tmp_path):
    dataset, settings, training = tabs
    settings.show()
    _choose_method(settings, "grpo")
    assert settings.rewards.isVisible() and not settings.beta.isVisible()
    settings.rewards.checks["contains"].setChecked(True)
    settings.rewards.weights["contains"].setValue(0.5)
    assert settings.draft.config.training.rewards == ["contains=0.5", "tool_call=1"]
    assert not settings.reward_pattern.isEnabled(), "the pattern is asked for with the regex reward"
    settings.num_generations.setValue(2)
    settings.max_completion_length.setValue(16)
    settings.kl_coefficient.setValue(0.04)

    # The demo's conversations are GRPO prompts: the last reply is the one the rewards compare against.
    dataset.show()
    with qtbot.waitSignal(dataset.loaded, timeout=60_000):
        dataset.open_path(demo_assets.dataset_path)
    assert dataset.rows_model.HEADERS == ("Line", "Prompt", "Expected reply")

    steps = _train(qtbot, training, settings.draft.snapshot())
    plots = training.metrics_plots.method_plots
    qtbot.waitUntil(lambda: plots.isVisible())
    for key in ("rewards/tool_call/mean", "rewards/contains/mean", "reward", "completions/mean_length", "kl"):
        assert plots.series(key)[0] == [float(e["step"]) for e in steps], key
    curves = plots.plots["Reward per function"].curves
    assert set(curves) == {"rewards/tool_call/mean", "rewards/contains/mean"}
    assert "Reward margin" not in plots.plots
    training.grab().save(str(tmp_path / "grpo-rewards.png"))
