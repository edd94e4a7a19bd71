"""The Runs view shows each run's latest eval scores as columns, sortable, beside its loss."""

from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import Qt

from studio.core.config.settings import RunConfig, save_config
from studio.core.eval.results import SUMMARY_FILE
from studio.core.eval.runner import EVALS_FOLDER
from studio.core.runs.events import EventWriter
from studio.core.runs.store import RunDirectory, RunStore


def _run(store: RunStore, name: str, final_loss: float) -> RunDirectory:
    run = store.new_run(name)
    save_config(RunConfig(name=name), run.config_path)
    with EventWriter(run.events_path) as writer:
        writer.write({"event": "started", "time": 100.0, "pid": 1, "total_steps": 1})
        writer.write({"event": "step", "time": 101.0, "step": 1, "loss": final_loss})
        writer.write({"event": "finished", "time": 102.0, "status": "completed", "step": 1, "final_loss": final_loss})
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    return run


def _eval(stored_under: RunDirectory, name: str, scored: dict[RunDirectory, dict[str, tuple[int, int]]],
          when: float) -> None:
    folder = stored_under.path / EVALS_FOLDER / name
    folder.mkdir(parents=True)
    metric_names = list(dict.fromkeys(m for counts in scored.values() for m in counts))
    models = {"base": {"source": None, "metrics": {m: {"passed": 0, "total": 47, "mean_score": 0.0}
                                                   for m in metric_names}}}
    for run, counts in scored.items():
        models[run.name] = {"source": str(run.adapter_dir), "metrics": {
            m: {"passed": p, "total": t, "mean_score": round(p / t, 4)} for m, (p, t) in counts.items()}}
    path = folder / SUMMARY_FILE
    path.write_text(json.dumps({"name": name, "eval_set": "held-out split", "cases": 47, "complete": True,
                                "metric_names": metric_names, "models": models}), encoding="utf-8")
    os.utime(path, (when, when))


@pytest.fixture
def view_and_store(qtbot, tmp_path):
    from studio.ui.tabs.runs_view import QtRunsView

    store = RunStore(tmp_path / "runs")
    low_loss, learned = _run(store, "low-loss", 0.2), _run(store, "learned", 0.9)
    _run(store, "new", 0.5)  # never evaluated
    # The run with the lower loss learned less: the scores tell them apart where the loss misleads.
    _eval(low_loss, "compare", {low_loss: {"tool_call": (30, 47)}, learned: {"tool_call": (41, 47)}}, when=1000.0)
    view = QtRunsView(store)
    qtbot.addWidget(view)
    view.refresh_now()
    return view, store


def _column(view, title: str) -> int:
    titles = [view.table.horizontalHeaderItem(i).text() for i in range(view.table.columnCount())]
    return titles.index(title)


def _cells(view, title: str) -> list[tuple[str, str]]:
    column = _column(view, title)
    return [(view.table.item(row, 0).text(), view.table.item(row, column).text())
            for row in range(view.table.rowCount())]


def test_each_run_shows_its_latest_eval_scores_in_a_column_per_metric(view_and_store):
    view, _ = view_and_store
    assert dict(_cells(view, "Tool call")) == {"low-loss": "30/47", "learned": "41/47", "new": "—"}
    learned_row = next(r for r in range(view.table.rowCount()) if view.table.item(r, 0).text() == "learned")
    tooltip = view.table.item(learned_row, _column(view, "Tool call")).toolTip()
    assert "41/47 passed" in tooltip and "eval compare" in tooltip and "held-out split" in tooltip


def test_sorting_by_a_score_orders_runs_by_what_they_learned(view_and_store):
    view, _ = view_and_store
    column = _column(view, "Tool call")
    view.table.sortItems(column, Qt.SortOrder.DescendingOrder)
    assert [name for name, text in _cells(view, "Tool call") if text != "—"] == ["learned", "low-loss"]
    view.table.sortItems(column, Qt.SortOrder.AscendingOrder)
    assert [name for name, _ in _cells(view, "Tool call")] == ["low-loss", "learned", "new"], \
        "an unscored run sorts after every scored one"
    view.table.sortItems(_column(view, "Final loss"), Qt.SortOrder.AscendingOrder)
    assert view.table.item(0, 0).text() == "low-loss"


def test_a_newer_eval_replaces_the_scores_and_adds_its_metrics_on_refresh(qtbot, view_and_store):
    view, store = view_and_store
    learned = next(run for run in store.runs() if run.name == "learned")
    _eval(learned, "again", {learned: {"tool_call": (45, 47), "exact": (40, 47)}}, when=2000.0)
    with qtbot.waitSignal(view.refreshed, timeout=10_000):
        view.refresh()
    assert dict(_cells(view, "Tool call"))["learned"] == "45/47"
    assert dict(_cells(view, "Exact")) == {"low-loss": "—", "learned": "40/47", "new": "—"}
    assert dict(_cells(view, "Tool call"))["low-loss"] == "30/47", "still scored by the earlier eval of both"
