"""One of each: every long core function takes one `task: TaskState` with one cancel spelling, and a child
process's exit is told by one function."""

from __future__ import annotations

import ast
import inspect
import re
import threading
from pathlib import Path

import pytest

import studio
from studio.core.data.loading import load_data
from studio.core.data.stats import measure_tokens
from studio.core.eval.generate import generate_batch
from studio.core.eval.runner import run_eval
from studio.core.eval.verify import run_check
from studio.core.export.adapter import export_adapter, export_adapter_zip
from studio.core.export.gguf import export_gguf, write_gguf
from studio.core.export.jobs import run_export, verify_export
from studio.core.export.merge import merge_adapter
from studio.core.export.staging import ExportCancelled, Reporter
from studio.core.models.download import download_model
from studio.core.system.processes import describe_exit
from studio.core.system.tasks import NO_TASK, Task, TaskState, reporting
from studio.core.methods.reading import load_preference_data
from studio.core.train.scores import score_model

REPO = Path(studio.__file__).resolve().parents[1]

LONG_FUNCTIONS = [load_data, measure_tokens, load_preference_data, run_eval, generate_batch, run_check,
                  export_adapter, export_adapter_zip, merge_adapter, write_gguf, export_gguf, run_export,
                  verify_export, download_model, score_model]
OTHER_SPELLINGS = {"should_stop", "should_cancel", "stop_requested", "cancel", "cancelled", "progress", "on_progress",
                   "on_head", "on_partial"}
"""What these functions took before `task`: five ways to say cancel, three to report."""


@pytest.mark.parametrize("function", LONG_FUNCTIONS, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_every_long_core_function_takes_one_task_and_nothing_else_to_cancel_or_report(function):
    parameters = inspect.signature(function).parameters
    assert "task" in parameters, f"{function.__qualname__} takes no task"
    assert parameters["task"].default is NO_TASK and parameters["task"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not OTHER_SPELLINGS & set(parameters), sorted(OTHER_SPELLINGS & set(parameters))


def test_the_product_has_one_cancel_spelling_for_tasks():
    """`task.cancelled()` for work a caller cancels; the training run's stop file keeps its one name,
    `stop_requested`, from the run folder to the trainer's callback."""
    spellings = re.compile(r"\b(should_stop|should_cancel)\b")
    event_parameter = re.compile(r"\w+: threading\.Event\b")  # a core function taking its own stop Event
    offenders = [f"{path.relative_to(REPO)}: {line.strip()}" for path in sorted((REPO / "studio").rglob("*.py"))
                 for line in path.read_text(encoding="utf-8").splitlines()
                 if spellings.search(line) or (event_parameter.search(line) and "core" in path.parts
                                               and path.name != "tasks.py")]
    # Left: a chat reply's `stop` Event (core.chat.model.stream_reply, through sessions.chat.generate_replies),
    # to become a `task` with the chat session's rework.
    left = ("studio/core/chat/model.py: ", "studio/core/sessions/chat.py: ")
    assert [line for line in offenders if not line.startswith(left)] == []


def test_a_headless_task_reports_and_cancels_through_plain_callbacks():
    seen, parts, stop = [], [], threading.Event()
    task = Task(lambda *values: seen.append(values), parts.append, cancel=stop)
    assert isinstance(task, TaskState) and isinstance(NO_TASK, TaskState)
    task.progress(0.5, "half")
    task.partial("head")
    assert (seen, parts, task.cancelled()) == ([(0.5, "half")], ["head"], False)
    stop.set()
    assert task.cancelled()
    assert Task(cancel=lambda: True).cancelled() and not NO_TASK.cancelled()
    NO_TASK.progress(1, 2, "nobody listens")  # a no-op, never an error


def test_reporting_hands_a_part_of_the_work_on_with_its_own_progress_and_the_same_cancel():
    stop, parts, outer, inner = threading.Event(), [], [], []
    task = Task(outer.append, parts.append, cancel=stop)
    part = reporting(task, lambda done, total, message: inner.append((done, total)))
    part.progress(3, 10, "three")
    part.partial("row")
    assert (outer, inner, parts) == ([], [(3, 10)], ["row"])
    assert not part.cancelled()
    stop.set()
    assert part.cancelled()


def test_a_slice_of_an_export_is_a_task_for_the_export_doing_that_part():
    seen, stop = [], threading.Event()
    report = Reporter(Task(lambda fraction, message: seen.append((round(fraction, 3), message)), cancel=stop))
    merge_part = report.part(0.0, 0.45)
    assert isinstance(merge_part, TaskState)
    Reporter(merge_part).part(0.5, 1.0)(0.5, "halfway through the second half of the merge")
    assert seen == [(0.338, "halfway through the second half of the merge")]
    stop.set()
    assert merge_part.cancelled()
    with pytest.raises(ExportCancelled):
        merge_part.progress(1.0, "done")


def test_a_child_process_exit_is_told_by_one_function():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(None).startswith("exit status unknown")
    assert describe_exit(-9999) == "killed by signal 9999"
    definitions = {}
    for path in sorted((REPO / "studio").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in ("describe_exit", "TaskState"):
                definitions.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    assert definitions["describe_exit"] == ["studio/core/system/processes.py"]
    # The protocol once in core; the window's task state implements it under a name of its own.
    assert definitions["TaskState"] == ["studio/core/system/tasks.py"]
