"""Run directories: unique names, status as the history shows it, stop requests, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.runs.events import EventWriter, make_event
from studio.core.system.paths import HOME_ENV_VAR
from studio.core.runs.store import RunBusyError, RunDirectory, RunStore


def _write(run: RunDirectory, *events: dict) -> None:
    with EventWriter(run.events_path) as writer:
        for event in events:
            writer.write(event)


def _dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_go_under_the_studio_home_by_default(studio_home):
    assert os.environ[HOME_ENV_VAR] == str(studio_home)
    store = RunStore()
    run = store.new_run("demo")
    try:
        assert run.path.parent == studio_home / "runs"
        assert run.path.is_dir()
    finally:  # the session's home is shared: later tests check that a refused start leaves its runs folder empty
        run.path.rmdir()


def test_new_run_names_are_unique(tmp_path):
    store = RunStore(tmp_path / "runs")
    first, second, third = (store.new_run("demo") for _ in range(3))
    assert [r.name for r in (first, second, third)] == ["demo", "demo-2", "demo-3"]
    assert all(r.path.is_dir() for r in (first, second, third))


def test_generated_names_are_unique_and_safe(tmp_path):
    store = RunStore(tmp_path / "runs")
    runs = [store.new_run(model="meta-llama/Llama 3.2:1B") for _ in range(2)]
    assert runs[0].name != runs[1].name
    for run in runs:
        assert run.path.parent == store.root
        assert "Llama-3.2-1B" in run.name
        assert " " not in run.name and ":" not in run.name and "/" not in run.name


def test_a_name_with_path_characters_stays_inside_the_runs_folder(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.new_run("../../etc/evil run")
    assert run.path.parent == store.root


def test_runs_lists_newest_first_and_delete_removes(tmp_path):
    store = RunStore(tmp_path / "runs")
    old, new = store.new_run("old"), store.new_run("new")
    os.utime(old.path, (1_000_000, 1_000_000))
    os.utime(new.path, (2_000_000, 2_000_000))
    (store.root / ".hidden").mkdir()
    assert [r.name for r in store.runs()] == ["new", "old"]
    store.delete(old)
    assert [r.name for r in store.runs()] == ["new"]


def test_an_empty_store_has_no_runs(tmp_path):
    assert RunStore(tmp_path / "nothing-here").runs() == []


# ------------------------------------------------------------------ status


def test_status_of_a_run_that_has_not_started(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    assert run.status() == "new"


def test_status_while_the_training_process_is_alive(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("log", level="info", message="Loading"),
           make_event("started", pid=os.getpid(), total_steps=10),
           make_event("step", step=1, loss=2.0))
    assert run.status() == "running"


def test_status_of_a_completed_run(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=_dead_pid(), total_steps=2),
           make_event("step", step=2, loss=1.0),
           make_event("finished", status="completed", step=2))
    assert run.status() == "completed"


def test_status_of_a_stopped_run(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=_dead_pid(), total_steps=60),
           make_event("step", step=3, loss=1.0),
           make_event("finished", status="stopped", step=3))
    assert run.status() == "stopped"


def test_status_of_a_failed_run(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=os.getpid(), total_steps=60),
           {"event": "failed", "time": 0.0, "kind": "oom", "message": "CUDA out of memory", "hint": ""})
    assert run.status() == "failed"


def test_a_run_whose_process_vanished_is_failed_not_running(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=_dead_pid(), total_steps=60), make_event("step", step=5, loss=1.0))
    assert run.status() == "failed"


def test_a_resumed_run_that_is_training_again_is_running(tmp_path):
    # Stopped at step 3, then resumed by this (live) process: the history must say "running",
    # not the status of the earlier, finished segment.
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=_dead_pid(), total_steps=60),
           make_event("step", step=3, loss=2.0),
           make_event("finished", status="stopped", step=3),
           make_event("started", pid=os.getpid(), total_steps=60, resumed_from="checkpoint-3"),
           make_event("step", step=4, loss=1.9))
    assert run.status() == "running"


def test_a_resumed_run_whose_process_vanished_is_failed(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    _write(run, make_event("started", pid=_dead_pid(), total_steps=60),
           make_event("finished", status="stopped", step=3),
           make_event("started", pid=_dead_pid(), total_steps=60, resumed_from="checkpoint-3"),
           make_event("step", step=4, loss=1.9))
    assert run.status() == "failed"


# ------------------------------------------------------------------ stop request, checkpoints


def test_stop_request_round_trip(tmp_path):
    run = RunDirectory(tmp_path / "not-yet-created")
    assert not run.stop_requested()
    run.request_stop()
    assert run.stop_requested()
    assert RunDirectory(run.path).stop_requested()  # any process sees it: it is a file
    run.clear_stop_request()
    assert not run.stop_requested()
    run.clear_stop_request()  # clearing twice is harmless


def test_checkpoints_are_sorted_by_step_and_staging_is_never_listed(tmp_path):
    run = RunStore(tmp_path).new_run("r")
    assert run.checkpoints() == [] and run.latest_checkpoint() is None
    for name in ("checkpoint-10", "checkpoint-9", "checkpoint-100", ".staging/checkpoint-110",
                 "checkpoint-final", "checkpoint-5.partial"):
        (run.checkpoints_dir / name).mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-200").write_text("not a folder", encoding="utf-8")

    assert [p.name for p in run.checkpoints()] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert run.latest_checkpoint() == run.checkpoints_dir / "checkpoint-100"


def test_run_directory_layout(tmp_path):
    run = RunDirectory(tmp_path / "r")
    assert run.name == "r"
    assert run.config_path == tmp_path / "r" / "run.toml"
    assert run.events_path == tmp_path / "r" / "events.jsonl"
    assert run.adapter_dir == tmp_path / "r" / "adapter"
    assert run.checkpoints_dir == tmp_path / "r" / "checkpoints"
    assert not Path(tmp_path / "r").exists()  # nothing is created until written


def _hold_lock_in_child(run: RunDirectory) -> subprocess.Popen:
    """A separate process that takes the run's writer lock and keeps it until killed."""
    code = ("import sys, time; from pathlib import Path; from studio.core.runs.store import RunDirectory; "
            "lock = RunDirectory(Path(sys.argv[1])).writer_lock(); assert lock.acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run.path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_run_folder_has_one_writer_and_a_killed_writer_leaves_it_free(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    child = _hold_lock_in_child(run)
    try:
        message = run.busy_message()
        assert message is not None and "still training" in message and f"process {child.pid}" in message
        assert not run.writer_lock().acquire(attempts=1), "a second writer is turned away"
        with pytest.raises(RunBusyError):
            RunStore(tmp_path).delete(run)
    finally:
        child.kill()  # SIGKILL: no clean-up code of the holder runs
        child.wait()
        child.stdout.close()

    assert run.busy_message() is None, "the OS released the dead process's lock"
    lock = run.writer_lock()
    assert lock.acquire(attempts=1)
    assert run.busy_message() is not None, "held by this process now"
    lock.release()
    assert run.busy_message() is None


def test_the_leftovers_of_a_killed_save_are_removed_and_complete_checkpoints_kept(tmp_path):
    run = RunDirectory(tmp_path / "run")
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    (run.checkpoints_dir / ".staging" / "checkpoint-4").mkdir(parents=True)
    (run.checkpoints_dir / ".staging" / "checkpoint-4" / "optimizer.pt").write_bytes(b"torn")
    (run.path / "adapter.partial").mkdir()

    removed = run.remove_leftovers()

    assert sorted(p.name for p in removed) == [".staging", "adapter.partial"]
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["checkpoint-2"]
    assert not (run.path / "adapter.partial").exists()
