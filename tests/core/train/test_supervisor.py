"""The Qt-free training supervisor: start or watch a child, relay its events, decide and record its ending.

Most tests start a tiny Python child that writes events the way `finetune-studio train` does (its pid first,
then steps, then an ending, or none); the last one supervises the real `finetune-studio train` on the demo.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from studio.core.runs.events import make_event, read_events
from studio.core.runs.store import RunDirectory
from studio.core.train import supervisor as supervisor_module
from studio.core.system.processes import describe_exit
from studio.core.train.supervisor import TrainingSupervisor, training_command
from supervisor_shared import Record  # noqa: F401  (shared with the other half)

CHILD = """
import os, sys, time
from pathlib import Path
from studio.core.runs.events import EventWriter, make_event
from studio.core.runs.store import RunDirectory

run, behaviour = RunDirectory(Path(sys.argv[1])), sys.argv[2]
print("child: hello from the training process", flush=True)
with EventWriter(run.events_path) as events:
    events.write(make_event("log", level="info", message=f"Training process {os.getpid()} started", pid=os.getpid()))
    events.write(make_event("step", step=1, loss=2.0))
    if behaviour == "crash":
        sys.exit(3)
    if behaviour in ("until_stopped", "ignores_stop"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (behaviour == "ignores_stop" or not run.stop_requested()):
            time.sleep(0.02)
        events.write(make_event("finished", status="stopped", step=1, message="stopped at step 1"))
    else:
        events.write(make_event("finished", status="completed", step=1, message="trained 1 step"))
"""


@pytest.fixture
def fake_child(tmp_path, monkeypatch):
    """The supervisor starts the tiny child instead of `finetune-studio train`; returns how to pick its script."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    behaviour = SimpleNamespace(name="complete")

    def command(run_dir, **_):
        return [sys.executable, str(script), str(run_dir.path), behaviour.name]

    monkeypatch.setattr(supervisor_module, "training_command", command)
    return behaviour




def _run(tmp_path) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    return run


def test_a_run_that_completes_is_relayed_event_by_event_and_its_console_goes_to_train_log(tmp_path, fake_child):
    run = _run(tmp_path)
    supervisor, seen = TrainingSupervisor(run), Record()

    supervisor.supervise(seen.on_event, seen.on_ended)

    assert seen.kinds == ["log", "step", "finished"]
    assert seen.events[0]["pid"] == supervisor.pid
    assert seen.endings == [("completed", "trained 1 step")]
    assert "child: hello from the training process" in run.log_path.read_text(encoding="utf-8")


def test_a_crash_without_an_ending_is_recorded_as_a_failed_event_in_the_run(tmp_path, fake_child):
    fake_child.name = "crash"
    run = _run(tmp_path)
    seen = Record()

    TrainingSupervisor(run).supervise(seen.on_event, seen.on_ended)

    [(status, message)] = seen.endings
    assert status == "failed" and "ended unexpectedly (exit code 3); see train.log" in message
    assert seen.kinds == ["log", "step", "failed"]
    stored = read_events(run.events_path)[-1]
    assert stored["event"] == "failed" and stored["kind"] == "crash" and stored["message"] == message
    assert run.status() == "failed"


def test_a_stop_request_ends_the_run_stopped(tmp_path, fake_child):
    fake_child.name = "until_stopped"
    run = _run(tmp_path)
    supervisor, seen = TrainingSupervisor(run), Record()

    def on_event(event):
        seen.on_event(event)
        if event["event"] == "step" and not supervisor.stopping:
            supervisor.request_stop()

    supervisor.supervise(on_event, seen.on_ended)

    assert supervisor.stopping
    assert seen.endings == [("stopped", "stopped at step 1")]
    assert seen.kinds == ["log", "step", "finished"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_second_stop_request_kills_a_run_that_does_not_stop(tmp_path, fake_child):
    fake_child.name = "ignores_stop"
    run = _run(tmp_path)
    supervisor, seen = TrainingSupervisor(run), Record()

    def on_event(event):
        seen.on_event(event)
        if event["event"] == "step":
            supervisor.request_stop()  # asks the run to save and stop, which it ignores
            supervisor.request_stop()  # the second press: kill it

    supervisor.supervise(on_event, seen.on_ended)

    [(status, message)] = seen.endings
    assert status == "failed" and "killed by SIGKILL" in message
    assert run.events()[-1]["event"] == "failed"


def test_a_child_that_cannot_start_is_a_failed_run(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "training_command", lambda run_dir, **_: [str(tmp_path / "no-such-python")])
    run = _run(tmp_path)
    seen = Record()

    TrainingSupervisor(run).supervise(seen.on_event, seen.on_ended)

    [(status, message)] = seen.endings
    assert status == "failed" and message.startswith("the training process could not start: ")
    assert run.events()[-1]["event"] == "failed"


def test_a_detached_watch_leaves_the_run_training_and_a_later_supervisor_attaches_to_it_and_stops_it(
        tmp_path, fake_child):
    fake_child.name = "until_stopped"
    run = _run(tmp_path)
    first, seen = TrainingSupervisor(run), Record()

    first.supervise(seen.on_event, seen.on_ended, detached=lambda: "step" in seen.kinds)

    assert seen.endings == [], "a watch given up says nothing about the ending"
    assert run.status() == "running"
    again = TrainingSupervisor.attach(run)
    assert again is not None and again.attached and again.pid == first.pid
    replayed = Record()

    def on_event(event):
        replayed.on_event(event)
        if event["event"] == "step" and not again.stopping:
            again.request_stop()  # the stop request is a file: a watcher that did not start the run can stop it

    again.supervise(on_event, replayed.on_ended)

    assert replayed.kinds == ["log", "step", "finished"], "the attached watch replays the run from its first line"
    assert replayed.endings == [("stopped", "stopped at step 1")]
    assert TrainingSupervisor.attach(run) is None, "the run is no longer training"


def test_supervise_can_run_on_another_thread_and_be_stopped_from_this_one(tmp_path, fake_child):
    fake_child.name = "until_stopped"
    run = _run(tmp_path)
    supervisor, seen = TrainingSupervisor(run), Record()
    started = threading.Event()

    def on_event(event):
        seen.on_event(event)
        if event["event"] == "step":
            started.set()

    thread = threading.Thread(target=supervisor.supervise, args=(on_event, seen.on_ended))
    thread.start()
    assert started.wait(60)
    supervisor.request_stop()
    thread.join(60)

    assert not thread.is_alive()
    assert seen.endings == [("stopped", "stopped at step 1")]


def test_a_stop_deadline_counts_from_the_runs_last_sign_of_life(tmp_path):
    """Stop is honoured at the next step end; an evaluation can take minutes before that. While the run
    reports progress the supervisor must not kill it for being slow to stop — only for going silent."""

    def supervisor(pid: int) -> TrainingSupervisor:
        watcher = TrainingSupervisor(RunDirectory(tmp_path / "run"), stop_timeout_s=60)
        watcher.pid, watcher._own_events, watcher._terminal = pid, False, None
        watcher._stop_deadline = time.monotonic() + 1  # Stop was pressed 59 s ago
        return watcher

    earlier_process = [make_event("started", pid=111), make_event("evaluating", step=4, done=3, total=9)]
    this_process = [make_event("log", pid=222, message="Loading"), make_event("evaluating", step=8, done=1, total=9)]

    watcher = supervisor(222)
    before = watcher._stop_deadline
    watcher._relay(SimpleNamespace(read_new=lambda: earlier_process), lambda event: None)  # replayed history
    assert watcher._stop_deadline == before
    watcher._relay(SimpleNamespace(read_new=lambda: this_process), lambda event: None)
    assert watcher._stop_deadline >= time.monotonic() + 59


def test_the_child_is_the_command_a_user_runs_and_its_exit_is_told_in_words(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert training_command(run)[1:] == ["-m", "studio", "train", str(run.config_path), "--output", str(run.path)]
    assert training_command(run, resume=True)[-1] == "--resume"
    assert training_command(run, resume_from=tmp_path / "ckpt")[-2:] == ["--resume", str(tmp_path / "ckpt")]
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(None).startswith("exit status unknown")
    if hasattr(signal, "SIGKILL"):
        assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
