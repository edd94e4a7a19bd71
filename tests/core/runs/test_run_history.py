"""Run history: curves and summaries read from run directories (no Qt, no training)."""

from __future__ import annotations

import math
import os

import pytest

from studio.core.config.settings import RunConfig, save_config
from studio.core.runs.history import RunMetrics, run_row, run_rows
from studio.core.runs.store import RunBusyError, RunDirectory, RunStore
from run_history_shared import _dead_pid, _write, ev, step  # noqa: F401  (shared with the other half)










def test_metrics_collect_every_series_with_steps_and_training_time():
    metrics = RunMetrics([
        ev("log", 1000.0, pid=11, message="Training process 11 started"),
        ev("started", 1002.0, pid=11, total_steps=10, start_step=0),
        step(1, 1004.0, 2.0),
        step(2, 1005.0, 1.5),
        ev("eval", 1005.5, step=2, eval_loss=1.7),
        step(3, 1006.0, 1.2),
    ])
    assert metrics.steps == [1, 2, 3]
    assert metrics.times == [4.0, 5.0, 6.0]
    assert metrics.series["loss"] == [2.0, 1.5, 1.2]
    assert metrics.series["learning_rate"] == [1e-3] * 3
    assert metrics.eval_steps == [2] and metrics.eval_loss == [1.7] and metrics.eval_times == [5.5]
    assert metrics.total_steps == 10 and metrics.current_step == 3 and metrics.current_epoch == 0.3
    assert metrics.eta() == pytest.approx(7 * 1.0)  # 2 s for 2 steps, 7 left
    assert metrics.elapsed() == 6.0
    assert metrics.final_loss == 1.2 and metrics.best_loss == 1.2 and metrics.best_eval_loss == 1.7


def test_a_missing_value_is_nan_not_an_error():
    metrics = RunMetrics([ev("started", 1.0, pid=1, total_steps=2),
                          ev("step", 2.0, step=1, loss=1.0, learning_rate=None)])
    assert math.isnan(metrics.series["learning_rate"][0]) and math.isnan(metrics.series["grad_norm"][0])


def test_a_resume_from_an_older_checkpoint_drops_the_steps_trained_again():
    # Killed at step 5, resumed from checkpoint-3: steps 4 and 5 are trained again by the new process.
    first = [ev("log", 0.5, pid=1), ev("started", 1.0, pid=1, total_steps=8, start_step=0)]
    first += [step(n, 1.0 + n, 3.0 - 0.1 * n) for n in range(1, 6)] + [ev("eval", 4.5, step=4, eval_loss=2.0)]
    first += [ev("failed", 6.5, kind="crash", message="killed by SIGKILL")]
    metrics = RunMetrics(first)
    assert metrics.ending["kind"] == "crash"
    assert metrics.feed(ev("log", 100.0, pid=2, resumed_from="checkpoint-3")) == ""
    assert metrics.ending is None, "a new process has not ended yet"
    assert metrics.feed(ev("started", 101.0, pid=2, total_steps=8, start_step=3)) == "truncated"
    assert metrics.steps == [1, 2, 3] and metrics.eval_steps == []
    assert metrics.feed(step(4, 102.0, 2.5)) == "step"
    assert metrics.steps == [1, 2, 3, 4]
    # Training time skips the gap between the processes: 6 s in the first, 2 s into the second.
    assert metrics.times[-1] == pytest.approx(6.0 + 2.0)


def test_a_resume_from_the_last_step_keeps_every_point():
    metrics = RunMetrics([ev("started", 1.0, pid=1, total_steps=8), step(1, 2.0, 2.0), step(2, 3.0, 1.9),
                          ev("finished", 3.5, status="stopped", step=2)])
    assert metrics.feed(ev("started", 50.0, pid=2, total_steps=8, start_step=2)) == ""
    assert metrics.steps == [1, 2]


def test_summary_of_a_completed_run(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.new_run("demo")
    config = RunConfig(name="demo")
    config.model.name_or_path = "/models/tiny-llama"
    config.data.train_file = "/data/support.jsonl"
    save_config(config, run.config_path)
    pid = _dead_pid()
    _write(run, [ev("log", 100.0, pid=pid), ev("started", 101.0, pid=pid, total_steps=3),
                 step(1, 102.0, 2.0), step(2, 103.0, 0.9), step(3, 104.0, 1.1),
                 ev("checkpoint", 104.2, step=3, path="x"),
                 ev("finished", 104.5, status="completed", step=3, final_loss=1.1)])
    (run.adapter_dir).mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"\0" * 2046)
    (run.checkpoints_dir / "checkpoint-3").mkdir(parents=True)

    summary = run_row(run)
    assert summary.name == "demo" and summary.status == "completed"
    assert summary.model == "/models/tiny-llama" and summary.dataset == "/data/support.jsonl"
    assert (summary.step, summary.total_steps) == (3, 3)
    assert summary.final_loss == 1.1 and summary.best_loss == 0.9 and summary.best_eval_loss is None
    assert summary.duration_s == pytest.approx(4.5)
    assert summary.adapter_bytes == 2048
    assert summary.checkpoint_steps == [3]
    assert summary.failure_kind is None and summary.message == ""
    assert [s.name for s in run_rows(store)] == ["demo"]


def test_summary_of_a_failed_and_of_a_vanished_run(tmp_path):
    store = RunStore(tmp_path)
    oom = store.new_run("oom")
    _write(oom, [ev("started", 1.0, pid=_dead_pid(), total_steps=5),
                 ev("failed", 2.0, kind="oom", message="CUDA out of memory", hint="turn on gradient checkpointing")])
    summary = run_row(oom)
    assert summary.status == "failed" and summary.failure_kind == "oom"
    assert summary.message == "CUDA out of memory"
    assert summary.adapter_bytes is None and summary.step is None

    vanished = store.new_run("vanished")
    _write(vanished, [ev("started", 1.0, pid=_dead_pid(), total_steps=5), step(1, 2.0, 1.0)])
    summary = run_row(vanished)
    assert summary.status == "failed" and "vanished" in summary.message and summary.step == 1


def test_summary_of_a_broken_or_empty_run_directory(tmp_path):
    run = RunStore(tmp_path).new_run("empty")
    run.config_path.write_text("this is [not toml", encoding="utf-8")
    summary = run_row(run)
    assert summary.status == "new" and summary.model == "" and summary.duration_s is None


def test_a_running_run_cannot_be_deleted(tmp_path):
    store = RunStore(tmp_path)
    run = store.new_run("live")
    _write(run, [ev("started", 1e12, pid=os.getpid(), total_steps=5)])  # this process: alive
    assert run.status() == "running"
    with pytest.raises(RunBusyError):
        store.delete(run)
    assert run.path.is_dir()


def test_a_reused_pid_is_not_mistaken_for_the_run():
    from studio.core.runs.store import _pid_alive

    assert _pid_alive(os.getpid())
    assert not _pid_alive(os.getpid(), started_by=1.0), "this process was created long after 1970"


# ------------------------------------------------------------------ scores from the run's evals


def _finished_run(store: RunStore, name: str) -> RunDirectory:
    run = store.new_run(name)
    save_config(RunConfig(name=name), run.config_path)
    _write(run, [ev("started", 100.0, pid=1, total_steps=1), step(1, 101.0, 1.0),
                 ev("finished", 102.0, status="completed", step=1, final_loss=1.0)])
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    return run


def _eval_summary(run: RunDirectory, name: str, columns: dict, *, complete: bool = True, when: float = 1000.0,
                  metric_names=("exact", "tool_call")) -> None:
    """A summary.json as core.eval writes it; `columns` maps a column to (source, {metric: (passed, total)})."""
    import json

    from studio.core.eval.results import SUMMARY_FILE
    from studio.core.eval.runner import EVALS_FOLDER

    folder = run.path / EVALS_FOLDER / name
    folder.mkdir(parents=True)
    models = {column: {"source": None if source is None else str(source), "done": 10,
                       "metrics": {m: {"passed": p, "total": t, "mean_score": p / t} for m, (p, t) in counts.items()}}
              for column, (source, counts) in columns.items()}
    path = folder / SUMMARY_FILE
    path.write_text(json.dumps({"name": name, "eval_set": f"{name}.jsonl", "cases": 10, "complete": complete,
                                "metric_names": list(metric_names), "models": models}), encoding="utf-8")
    os.utime(path, (when, when))


def test_a_run_is_scored_by_its_newest_complete_eval_of_its_own_adapter(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = _finished_run(store, "tuned")
    assert run_row(run).scores is None, "never evaluated: no scores"
    _eval_summary(run, "first", {"base": (None, {"exact": (0, 10), "tool_call": (1, 10)}),
                                 "tuned": (run.adapter_dir, {"exact": (6, 10), "tool_call": (7, 10)})}, when=1000.0)
    _eval_summary(run, "second", {"tuned": (run.adapter_dir, {"exact": (8, 10), "tool_call": (9, 10)})}, when=2000.0)
    _eval_summary(run, "cancelled", {"tuned": (run.adapter_dir, {"exact": (1, 2), "tool_call": (2, 2)})},
                  complete=False, when=3000.0)
    (run.path / "evals" / "broken").mkdir()
    (run.path / "evals" / "broken" / "summary.json").write_text("{not json", encoding="utf-8")

    scores = run_row(run).scores
    assert scores.eval_name == "second" and scores.column == "tuned" and scores.eval_set == "second.jsonl"
    assert list(scores.metrics) == ["exact", "tool_call"]
    assert scores.metrics["tool_call"].text == "9/10" and scores.metrics["exact"].fraction == 0.8
    assert "eval second" in scores.describe() and "second.jsonl" in scores.describe()


def test_an_eval_of_several_runs_scores_each_run_it_named(tmp_path):
    store = RunStore(tmp_path / "runs")
    first, second, _ = (_finished_run(store, name) for name in ("lr-1e-4", "lr-2e-4", "unscored"))
    # The Evaluate tab stores an eval of several runs under the first; each column names its adapter folder.
    _eval_summary(first, "compare", {"base": (None, {"tool_call": (0, 47)}),
                                     "lr-1e-4": (first.adapter_dir, {"tool_call": (41, 47)}),
                                     "lr-2e-4": (second.path / "adapter", {"tool_call": (30, 47)}),
                                     "gguf": (tmp_path / "x.gguf", {"tool_call": (41, 47)})},
                  metric_names=["tool_call"])

    by_name = {s.name: s for s in run_rows(store)}
    assert by_name["lr-1e-4"].scores.metrics["tool_call"].text == "41/47"
    assert by_name["lr-2e-4"].scores.metrics["tool_call"].text == "30/47"
    assert by_name["lr-2e-4"].scores.column == "lr-2e-4"
    assert by_name["unscored"].scores is None
    from studio.core.runs.history import score_metrics

    assert score_metrics(by_name.values()) == ["tool_call"]
