"""The window's one background-work helper: delivery on the GUI thread, cancel, replace, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from studio.ui.background import TaskRunner, describe_error, running_tasks, wait_for_all


@pytest.fixture
def runner(qtbot):
    from PySide6.QtWidgets import QWidget

    owner = QWidget()
    qtbot.addWidget(owner)
    runner = TaskRunner(owner)
    yield runner
    runner.shutdown()


def test_progress_partial_and_result_arrive_on_the_gui_thread_in_order(qtbot, runner):
    seen = []
    gui = threading.current_thread()

    def work(state):
        assert threading.current_thread() is not gui
        state.progress(0.5, 10)
        state.partial("head")
        return 42

    def record(kind):
        return lambda *args: seen.append((kind, args, threading.current_thread() is gui))

    with qtbot.waitSignal(_done_signal(runner), timeout=10_000):
        runner.start(work, on_progress=record("progress"), on_partial=record("partial"), on_result=record("result"),
                     on_done=record("done"))
    assert seen == [("progress", (0.5, 10), True), ("partial", ("head",), True), ("result", (42,), True),
                    ("done", (), True)]
    assert not runner.busy


def _done_signal(runner):
    """The next task's `finished`, known only once it starts: wait on the runner through a helper signal."""
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        done = Signal()

    probe = Probe(runner)
    original = runner.start

    def start(function, **callbacks):
        on_done = callbacks.pop("on_done", None)

        def done():
            if on_done is not None:
                on_done()
            probe.done.emit()

        return original(function, on_done=done, **callbacks)

    runner.start = start
    return probe.done


def test_an_error_is_delivered_not_raised(qtbot, runner):
    errors = []
    with qtbot.waitSignal(_done_signal(runner), timeout=10_000):
        runner.start(lambda state: 1 / 0, on_error=errors.append, on_result=lambda value: pytest.fail("no result"))
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    assert describe_error(errors[0]) == "ZeroDivisionError: division by zero"
    assert describe_error(ValueError("data.jsonl:3: no messages")) == "data.jsonl:3: no messages"


def test_a_new_task_cancels_the_old_one_and_its_late_result_is_dropped(qtbot, runner):
    results, cancelled = [], []
    release = threading.Event()

    def slow(state):
        release.wait(10)
        return "old"

    old = runner.start(slow, on_result=results.append, on_cancelled=lambda: cancelled.append("old"))
    with qtbot.waitSignal(_done_signal(runner), timeout=10_000):
        runner.start(lambda state: "new", on_result=results.append)
    assert old.cancelled
    release.set()
    qtbot.waitUntil(lambda: old.isFinished() and cancelled == ["old"], timeout=10_000)
    qtbot.wait(50)  # any queued delivery of the old result would have arrived by now
    assert results == ["new"]


def test_cancel_stops_a_function_that_polls_and_shutdown_waits_for_it(qtbot, runner):
    progress = []

    def loop(state):
        while not state.cancelled():
            state.progress(time.monotonic())
            state.wait(0.01)
        return "ended"

    task = runner.start(loop, on_progress=lambda *values: progress.append(values), on_result=progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 2, timeout=10_000)
    assert runner.busy
    assert runner.shutdown(10_000)
    assert task.isFinished() and not runner.busy
    count = len(progress)
    qtbot.wait(50)
    assert len(progress) == count and "ended" not in progress  # nothing from a cancelled task


def test_wait_for_all_cancels_and_joins_every_running_task(qtbot):
    from PySide6.QtWidgets import QWidget

    owners = [QWidget() for _ in range(3)]
    for owner in owners:
        qtbot.addWidget(owner)
    tasks = [TaskRunner(owner).start(lambda state: state.wait(30)) for owner in owners]
    qtbot.waitUntil(lambda: all(task.isRunning() for task in tasks), timeout=10_000)
    assert set(tasks) <= running_tasks()
    started = time.monotonic()
    assert wait_for_all(10_000)
    assert time.monotonic() - started < 5  # the waits were interrupted, not sat out
    assert not (set(tasks) & running_tasks())


def test_a_running_task_outlives_the_widget_that_started_it(qtbot):
    from PySide6.QtWidgets import QWidget

    owner = QWidget()
    release = threading.Event()
    task = TaskRunner(owner).start(lambda state: release.wait(10))
    owner.deleteLater()
    qtbot.wait(50)
    assert task in running_tasks()  # still referenced: Python cannot destroy the running QThread
    release.set()
    qtbot.waitUntil(task.isFinished, timeout=10_000)


def test_the_runner_is_busy_until_its_task_has_been_delivered_as_ended(qtbot, runner):
    delivered = []
    task = runner.start(lambda state: "done", on_result=delivered.append, on_done=lambda: delivered.append("end"))
    assert task.wait(10_000)  # the thread has ended; its result and on_done are still queued for the GUI thread
    assert runner.busy and delivered == []
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert delivered == ["done", "end"]  # whoever waits for "not busy" sees what the task's ending changed


def test_the_window_task_state_is_the_core_protocol_and_can_stop_on_an_owner_event(qtbot, runner):
    """A core function gets the window's task state as its `task`; `stopping_on` adds an owner's own stop (the
    Export dialog's Cancel) without dropping the task's outcome, which a cancelled task would."""
    from studio.core.system.tasks import TaskState as CoreTaskState

    stop = threading.Event()
    seen = []

    def work(state):
        task = state.stopping_on(stop)
        assert isinstance(state, CoreTaskState) and isinstance(task, CoreTaskState)
        task.progress(0.25, "a quarter")
        stop.set()
        return task.cancelled(), state.cancelled()

    with qtbot.waitSignal(_done_signal(runner), timeout=10_000):
        runner.start(work, on_progress=lambda *values: seen.append(values), on_result=seen.append)
    assert seen == [(0.25, "a quarter"), (True, False)]
