"""The Training tab with real demo runs: live plots, stop and resume, re-attach, faults and their endings.

Each test trains the offline demo model in a child process, as the window does. The fault tests use
FINETUNE_STUDIO_TEST_FAULTS (tests/fault_injection.py) to hold the child at an exact moment —
while the model loads, while a checkpoint is being saved — and kill it there with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from PySide6.QtCore import QCoreApplication, QSettings

from studio.core.config.settings import load_config, save_config
from studio.core.runs.events import read_events
from fault_injection import ENV_VAR as FAULTS
from studio.core.system.gpu import HostTelemetry
from studio.core.runs.store import RunDirectory, RunStore
from studio.core.train.run import verify_adapter

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")]

RUN_TIMEOUT_MS = 240_000


@pytest.fixture
def qt_settings(tmp_path, qapp):
    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qt-settings"))


@pytest.fixture
def demo_config(demo_assets):
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 400  # long enough that a stop or a kill always lands mid-run
    return config


@pytest.fixture
def tab(qtbot, tmp_path, qt_settings):
    from studio.ui.tabs.training_tab import QtTrainingTab

    widget = QtTrainingTab(RunStore(tmp_path / "runs"), HostTelemetry())
    qtbot.addWidget(widget)
    widget.resize(1180, 700)
    widget.show()
    yield widget
    _kill_if_running(widget)


def _kill_if_running(tab) -> None:
    if tab.is_running:
        tab.supervisor.kill()
        tab.supervisor.wait()
    tab.shutdown()


def _step_events(run: RunDirectory) -> list[dict]:
    return [e for e in read_events(run.events_path) if e["event"] == "step"]


def _set_max_steps(run: RunDirectory, max_steps: int) -> None:
    """Bound the resumed part of a test run (resume reads the run's run.toml, like the CLI)."""
    config = load_config(run.config_path)
    config.training.max_steps = max_steps
    save_config(config, run.config_path)


def _assert_curve_is_steps(tab, last: int) -> None:
    xs, _ = tab.loss_plot.train_points()
    assert list(xs) == list(range(1, last + 1)), "one point per step, none twice, none missing"
    for name in ("learning_rate", "grad_norm"):
        assert list(tab.metrics_plots.series_points(name)[0]) == list(range(1, last + 1))
    # Tokens/s needs two logs of one process, so each process's first step has none.
    tokens_steps = list(tab.metrics_plots.series_points("tokens_per_second")[0])
    assert tokens_steps == sorted(set(tokens_steps)) and set(tokens_steps) <= set(range(2, last + 1))
    assert len(tokens_steps) >= last - 3


def _kill_child(tab) -> list[dict]:
    events_before = read_events(tab.run_dir.events_path)
    os.kill(tab.supervisor.pid, signal.SIGKILL)
    return events_before


def _assert_killed_with_events_intact(qtbot, tab, events_before: list[dict]) -> None:
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=60_000)
    assert tab.last_status == "failed"
    text = tab.status_label.text()
    assert "ended unexpectedly" in text and "killed by SIGKILL" in text, text
    events_after = read_events(tab.run_dir.events_path)
    assert events_after[: len(events_before)] == events_before, "every event written before the kill is kept"
    assert events_after[-1]["event"] == "failed" and events_after[-1]["kind"] == "crash"
    assert tab.run_dir.status() == "failed"


# ------------------------------------------------------------------ live plots, stop, resume


def test_an_early_stopped_run_says_which_steps_adapter_it_kept(qtbot, tab, demo_config):
    demo_config.training.max_steps = 60
    demo_config.data.eval_fraction = 0.3
    t = demo_config.training
    t.eval_strategy, t.eval_steps, t.early_stopping_patience = "steps", 2, 2
    run = tab.start(demo_config)
    shown_while_evaluating = []  # the tab handles each event before this later-connected slot runs
    tab.supervisor.event.connect(
        lambda event: shown_while_evaluating.append(tab.progress.format()) if event["event"] == "evaluating" else None)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)

    assert tab.last_status == "completed", tab.status_label.text()
    assert shown_while_evaluating and all(re.search(r"evaluating \d+/\d+ batches", text)
                                          for text in shown_while_evaluating), shown_while_evaluating
    assert "evaluating" not in tab.progress.format()
    finished = read_events(run.events_path)[-1]
    text = tab.status_label.text()
    assert f"stopped early at step {finished['step']} of 60" in text, text
    assert f"The adapter is from step {finished['adapter_step']}, the lowest eval loss" in text, text


def test_plots_gain_a_point_per_step_stop_saves_a_loadable_adapter_and_resume_continues(qtbot, tab, demo_config,
                                                                                        demo_assets):
    run = tab.start(demo_config)
    counts_at_step_events = []
    tab.supervisor.event.connect(
        lambda e: e["event"] == "step" and counts_at_step_events.append(tab.loss_plot.train_point_count))
    qtbot.waitUntil(lambda: tab.loss_plot.train_point_count >= 5, timeout=RUN_TIMEOUT_MS)
    # The progress text is refreshed a few times a second, not on every step.
    qtbot.waitUntil(lambda: "ETA" in tab.progress.format(), timeout=10_000)
    assert tab.progress.format().startswith("step "), tab.progress.format()

    tab.stop_button.click()
    assert tab.stop_button.text() == "Kill now"
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "stopped", tab.status_label.text()

    # One point per logged step, added as each step event arrived.
    steps = _step_events(run)
    assert counts_at_step_events == list(range(1, len(steps) + 1))
    stopped_at = read_events(run.events_path)[-1]
    assert stopped_at["event"] == "finished" and stopped_at["status"] == "stopped"
    _assert_curve_is_steps(tab, stopped_at["step"])
    # The adapter loads: with the studio's check, and as a plain PEFT model on the base.
    assert verify_adapter(run.adapter_dir) > 0
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir)), str(run.adapter_dir))
    assert run.latest_checkpoint().name == f"checkpoint-{stopped_at['step']}"
    assert tab.resume_button.isEnabled() and tab.save_adapter_button.isEnabled()

    _set_max_steps(run, stopped_at["step"] + 6)
    tab.resume_button.click()
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()
    started = [e for e in read_events(run.events_path) if e["event"] == "started"]
    assert started[-1]["start_step"] == stopped_at["step"], "the step count continues from the checkpoint"
    resumed_steps = [e["step"] for e in _step_events(run)][len(steps):]
    assert resumed_steps == list(range(stopped_at["step"] + 1, stopped_at["step"] + 7))
    _assert_curve_is_steps(tab, stopped_at["step"] + 6)  # the curve continues, nothing drawn twice
    assert run.status() == "completed"


# ------------------------------------------------------------------ kill -9 at three moments


def test_a_kill_during_model_load_fails_with_the_signal_and_keeps_the_events(qtbot, tab, demo_config, monkeypatch):
    monkeypatch.setenv(FAULTS, "pause_model_load=300")
    tab.start(demo_config)
    qtbot.waitUntil(lambda: "pausing at model_load" in tab.log_panel.text(), timeout=RUN_TIMEOUT_MS)
    events_before = _kill_child(tab)
    assert any(e["event"] == "log" and e["message"].startswith("Loading") for e in events_before)

    _assert_killed_with_events_intact(qtbot, tab, events_before)
    assert tab.loss_plot.train_point_count == 0
    assert not tab.resume_button.isEnabled(), "no checkpoint yet: nothing to resume from"
    assert tab.start_button.isEnabled()


def test_a_resumed_run_killed_while_loading_is_failed_not_the_earlier_processs_ending(qtbot, tab, demo_config,
                                                                                      monkeypatch):
    demo_config.training.save_steps = 2
    monkeypatch.setenv(FAULTS, "oom_at_step=4")
    tab.start(demo_config)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "failed" and "ran out of memory" in tab.status_label.text()

    monkeypatch.setenv(FAULTS, "pause_model_load=300")
    assert tab.resume()
    qtbot.waitUntil(lambda: "pausing at model_load" in tab.log_panel.text(), timeout=RUN_TIMEOUT_MS)
    events_before = _kill_child(tab)
    assert [e["kind"] for e in events_before if e["event"] == "failed"] == ["oom"], "the first process's ending"
    _assert_killed_with_events_intact(qtbot, tab, events_before)
    assert "ran out of memory" not in tab.status_label.text()


def test_a_kill_mid_step_fails_and_resume_continues_from_the_last_checkpoint(qtbot, tab, demo_config):
    demo_config.training.save_steps = 3
    run = tab.start(demo_config)
    qtbot.waitUntil(lambda: run.latest_checkpoint() is not None and tab.loss_plot.train_point_count >= 5,
                    timeout=RUN_TIMEOUT_MS)
    events_before = _kill_child(tab)
    _assert_killed_with_events_intact(qtbot, tab, events_before)
    assert tab.resume_button.isEnabled()
    assert "Resume continues from checkpoint-" in tab.status_label.text()

    checkpoint = run.latest_checkpoint()
    resume_step = int(checkpoint.name.split("-")[1])
    _set_max_steps(run, resume_step + 4)
    assert tab.resume(checkpoint=checkpoint)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()
    started = [e for e in read_events(run.events_path) if e["event"] == "started"]
    assert started[-1]["start_step"] == resume_step and started[-1]["resumed_from"] == str(checkpoint)
    # Steps logged after the checkpoint were trained again: the curve shows each step once.
    _assert_curve_is_steps(tab, resume_step + 4)
    assert verify_adapter(run.adapter_dir) > 0


def test_a_kill_during_a_checkpoint_save_keeps_the_last_good_checkpoint(qtbot, tab, demo_config, monkeypatch):
    demo_config.training.save_steps = 3
    monkeypatch.setenv(FAULTS, "pause_checkpoint_save=300,pause_checkpoint_save_from_step=6")
    run = tab.start(demo_config)
    qtbot.waitUntil(lambda: "pausing at checkpoint_save" in tab.log_panel.text(), timeout=RUN_TIMEOUT_MS)
    staged = run.checkpoints_dir / ".staging" / "checkpoint-6"
    assert (staged / "trainer_state.json").is_file(), "killed with the new checkpoint written but not in place"
    events_before = _kill_child(tab)
    _assert_killed_with_events_intact(qtbot, tab, events_before)

    assert [p.name for p in run.checkpoints()] == ["checkpoint-3"], "the torn save is never listed"
    good = run.latest_checkpoint()
    assert (good / "trainer_state.json").is_file() and (good / "adapter_model.safetensors").is_file()

    monkeypatch.delenv(FAULTS)
    _set_max_steps(run, 7)
    tab.resume_button.click()
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()
    started = [e for e in read_events(run.events_path) if e["event"] == "started"]
    assert started[-1]["start_step"] == 3
    assert "checkpoint-6" in [p.name for p in run.checkpoints()] and not staged.exists()
    _assert_curve_is_steps(tab, 7)


# ------------------------------------------------------------------ out of memory


def test_an_oom_after_a_checkpoint_can_resume_from_it_with_the_suggested_change(qtbot, tab, demo_config,
                                                                                monkeypatch):
    demo_config.training.max_steps, demo_config.training.save_steps = 6, 2
    monkeypatch.setenv(FAULTS, "oom_at_step=4")
    adjusted = []
    tab.config_adjusted.connect(adjusted.append)
    run = tab.start(demo_config)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "failed"
    assert tab.resume_changed_button.isVisible()
    assert tab.resume_changed_button.text() == "Resume from checkpoint-2 and turn on gradient checkpointing"

    monkeypatch.delenv(FAULTS)
    tab.resume_changed_button.click()
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()
    assert load_config(run.config_path).training.gradient_checkpointing is True, "the run goes on with the change"
    assert adjusted and adjusted[-1].training.gradient_checkpointing is True, "and the Config tab takes it"
    started = [e for e in read_events(run.events_path) if e["event"] == "started"]
    assert started[-1]["start_step"] == 2, "the steps already trained are kept"
    _assert_curve_is_steps(tab, 6)


def test_a_simulated_oom_fails_as_oom_with_a_suggestion_and_retry_applies_it(qtbot, tab, demo_config, monkeypatch):
    demo_config.training.max_steps = 4
    assert demo_config.training.gradient_checkpointing is False
    monkeypatch.setenv(FAULTS, "oom_at_step=2")
    run = tab.start(demo_config)
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)

    assert tab.last_status == "failed"
    failed = read_events(run.events_path)[-1]
    assert failed["event"] == "failed" and failed["kind"] == "oom"
    assert failed["settings"]["gradient_checkpointing"] is False and failed["settings"]["max_length"] == 256
    text = tab.status_label.text()
    assert "ran out of memory" in text and "gradient checkpointing off" in text and "What to do" in text, text
    assert tab.retry_button.isVisible() and "turn on gradient checkpointing" in tab.retry_button.text()
    retry = tab.retry_config()
    assert retry.training.gradient_checkpointing is True
    assert retry.training.max_length == demo_config.training.max_length, "only the suggested change"

    monkeypatch.delenv(FAULTS)
    with qtbot.waitSignal(tab.config_adjusted) as adjusted:
        tab.retry_button.click()
    assert adjusted.args[0].training.gradient_checkpointing is True
    qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.last_status == "completed", tab.status_label.text()
    assert tab.run_dir != run and tab.run_dir.name.startswith(f"{run.name}-retry")
    assert load_config(tab.run_dir.config_path).training.gradient_checkpointing is True
    assert not tab.retry_button.isVisible()


# ------------------------------------------------------------------ close, keep training, reopen


def test_a_run_kept_training_after_close_is_reattached_live_and_stop_still_works(qtbot, tmp_path, qt_settings,
                                                                                 demo_config, monkeypatch):
    from studio.ui.main_window import QtMainWindow

    store = RunStore(tmp_path / "runs")
    first = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(first)
    first.set_config(demo_config)
    run = first.start_training()
    qtbot.waitUntil(lambda: first.training_tab.loss_plot.train_point_count >= 3, timeout=RUN_TIMEOUT_MS)
    pid = first.training_tab.supervisor.pid
    monkeypatch.setattr(first.training_tab, "ask_close_choice", lambda: "keep")
    first.close()
    points_at_close = len(_step_events(run))
    assert run.status() == "running", "the run outlived its window"

    second = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(second)
    tab = second.training_tab
    tab.NOTIFY_AFTER_S = 0.0
    try:
        assert tab.is_running and tab.supervisor.attached and tab.supervisor.pid == pid
        assert tab.run_dir == run and second.tabs.currentWidget() is tab
        assert "still training" in second.banner.text()
        # The whole curve so far, then live points on top of it.
        qtbot.waitUntil(lambda: tab.loss_plot.train_point_count > points_at_close, timeout=RUN_TIMEOUT_MS)
        assert list(tab.loss_plot.train_points()[0][:points_at_close]) == list(range(1, points_at_close + 1))

        tab.stop_button.click()  # the stop request is a file: it reaches a process this window did not start
        qtbot.waitUntil(lambda: tab.last_status is not None, timeout=RUN_TIMEOUT_MS)
        assert tab.last_status == "stopped", tab.status_label.text()
        finished = read_events(run.events_path)[-1]
        assert finished["event"] == "finished" and finished["status"] == "stopped"
        _assert_curve_is_steps(tab, finished["step"])
        assert verify_adapter(run.adapter_dir) > 0
        assert "Training stopped" in second.statusBar().currentMessage(), "no tray here: the status bar says it"
    finally:
        _kill_if_running(tab)


def test_start_refuses_target_modules_that_match_no_layer_without_making_a_run(tab, demo_config, tmp_path):
    # The window runs the same pre-flight as `finetune-studio train`: no failed run appears in the history.
    demo_config.lora.target_modules = ["q_proj", "qq_proj"]
    assert tab.start(demo_config) is None
    assert not tab.is_running and RunStore(tmp_path / "runs").runs() == []
    text = tab.status_label.text()
    assert "NOT STARTED" in text and "lora.target_modules" in text and "'qq_proj' matches no layer" in text


def test_the_window_will_not_resume_a_run_another_process_is_training(qtbot, tab, demo_assets):
    """Neither the Training tab, the Runs view nor a supervisor's child may become the folder's second writer."""
    import json

    from studio.core.runs.events import EventWriter, make_event
    from studio.ui.tabs.runs_view import QtRunsView
    from studio.ui.training_supervisor import QtTrainingSupervisor

    run = RunDirectory(tab.store.root / "live")
    save_config(load_config(demo_assets.config_path), run.config_path)
    with EventWriter(run.events_path) as writer:  # its events say stopped: a terminal run's resume is under way
        writer.write(make_event("log", level="info", message="Training process 1 started", pid=1))
        writer.write(make_event("finished", status="stopped", step=2))
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    events = run.events_path.read_bytes()
    lock = run.writer_lock()
    assert lock.acquire()  # this test process plays the live training process
    try:
        assert tab.resume(run) is False
        assert not tab.is_running
        assert "Cannot resume" in tab.status_label.text() and "still training" in tab.status_label.text()

        view = QtRunsView(tab.store)
        qtbot.addWidget(view)
        view.refresh_now()
        view.select_runs(["live"])
        assert not view.resume_button.isEnabled()
        assert "still training" in view.resume_button.toolTip()

        supervisor = QtTrainingSupervisor(run, resume=True)
        with qtbot.waitSignal(supervisor.ended, timeout=RUN_TIMEOUT_MS) as ended:
            supervisor.start()
        supervisor.wait()
        assert ended.args[0] == "failed" and "still training" in ended.args[1]
        assert run.events_path.read_bytes() == events, "no failed event marks the live run failed"
    finally:
        lock.release()
