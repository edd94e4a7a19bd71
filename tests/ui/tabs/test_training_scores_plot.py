"""The Training tab's held-out score curve, fed with `eval_scores` events by hand (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core.runs.store import RunStore
from studio.core.system.gpu import HostTelemetry
from studio.ui.widgets.qt_metrics_plots import X_TIME


def ev(kind: str, t: float, /, **fields) -> dict:
    return {"event": kind, "time": t, **fields}


def scores(n: int, t: float, passed: int, total: int = 8) -> dict:
    return ev("eval_scores", t, step=n, metric="tool_call", passed=passed, total=total, score=passed / total,
              truncated=0, seconds=1.5)


def step(n: int, t: float) -> dict:
    return ev("step", t, step=n, epoch=n / 10, loss=2.0 - 0.1 * n, learning_rate=1e-4, grad_norm=1.0,
              tokens_per_second=100.0)


@pytest.fixture
def tab(qtbot, tmp_path):
    from studio.ui.tabs.training_tab import QtTrainingTab

    widget = QtTrainingTab(RunStore(tmp_path / "runs"), HostTelemetry())
    qtbot.addWidget(widget)
    widget.resize(1180, 700)
    widget.show()
    yield widget
    widget.shutdown()


def _run_events() -> list[dict]:
    events = [ev("log", 100.0, pid=1, message="Training process started"),
              ev("started", 101.0, pid=1, total_steps=6, start_step=0)]
    for n in range(1, 7):
        events.append(step(n, 101.0 + n))
        if n % 2 == 0:
            events.append(ev("eval", 101.2 + n, step=n, eval_loss=2.0 - 0.05 * n))
            events.append(scores(n, 101.5 + n, passed=n))
    return events


def test_the_training_tab_plots_the_held_out_scores_beside_the_eval_loss(qtbot, tab):
    plot = tab.metrics_plots.scores_plot
    assert not plot.isVisible(), "no scores yet: no empty plot"
    for event in _run_events():
        tab.handle_event(event)

    xs, shares = plot.points()
    np.testing.assert_array_equal(xs, [2, 4, 6])
    np.testing.assert_allclose(shares, [2 / 8, 4 / 8, 6 / 8])
    assert plot.labels() == ["2/8", "4/8", "6/8"]
    assert plot.tooltips()[-1] == "step 6: 6/8 passed (tool_call, mean score 0.75)"
    # Drawn (the frame timer catches up), on a fixed 0..1 axis, the latest count in the tab's detail line.
    qtbot.waitUntil(lambda: plot.isVisible() and plot._curve.xData is not None and len(plot._curve.xData) == 3,
                    timeout=2000)
    low, high = plot.plot_widget.getPlotItem().viewRange()[1]
    assert low <= 0.0 and 1.0 <= high < 1.2
    assert [item.toPlainText() for item in plot._labels] == ["2/8", "4/8", "6/8"]
    assert plot.caption.text() == "Latest: step 6: 6/8 passed (tool_call, mean score 0.75)"
    assert "held-out 6/8" in tab.detail_label.text()
    assert tab.loss_plot.eval_point_count == 3  # the eval loss is still plotted beside it


def test_a_resume_drops_the_scores_of_the_retrained_steps_and_time_mode_moves_them(qtbot, tab):
    for event in _run_events():
        tab.handle_event(event)
    plot = tab.metrics_plots.scores_plot
    # Resumed from checkpoint-2: steps 3-6 are trained again, their scores are history.
    tab.handle_event(ev("log", 200.0, pid=2, message="Training process started"))
    tab.handle_event(ev("started", 201.0, pid=2, total_steps=6, start_step=2))
    assert plot.labels() == ["2/8"]
    tab.handle_event(step(3, 202.0))
    tab.handle_event(step(4, 203.0))
    tab.handle_event(scores(4, 203.5, passed=7))
    assert plot.labels() == ["2/8", "7/8"]
    np.testing.assert_array_equal(plot.points()[0], [2, 4])

    tab.metrics_plots.set_x_mode(X_TIME)
    xs, _ = plot.points()
    first_process = 103.5 - 100.0  # training seconds at the first scoring
    np.testing.assert_allclose(xs, [first_process, (107.5 - 100.0) + (203.5 - 200.0)])  # + the first process
    assert plot.labels() == ["2/8", "7/8"]


def test_a_finished_runs_events_draw_its_scores_at_once(qtbot, tab):
    tab.session.series.feed_all(_run_events())
    plot = tab.metrics_plots.scores_plot
    assert plot.labels() == ["2/8", "4/8", "6/8"]
    qtbot.waitUntil(plot.isVisible, timeout=2000)
    tab.session.series.reset()
    assert plot.point_count == 0 and not plot.isVisible()


# ------------------------------------------------------------------ the automatic held-out split, as the tabs show it


def test_a_47_row_file_gets_5_rows_held_out_and_the_config_tab_says_so(qtbot, tmp_path, qt_settings):
    import json

    from studio.ui.main_window import QtMainWindow, last_config_path

    last_config_path().unlink(missing_ok=True)
    data = tmp_path / "calls.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Fatura {n}?"},
                                                     {"role": "assistant", "content": f"get_bill({n})"}]}) + "\n"
                            for n in range(47)), encoding="utf-8")
    win = QtMainWindow(store=RunStore(tmp_path / "runs"), telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(win)
    try:
        with qtbot.waitSignal(win.dataset_tab.loaded, timeout=60_000):
            win.dataset_tab.open_path(data)
        summary, panel = win.config_tab.eval_summary, win.dataset_tab.split_panel
        assert summary.text() == "5 of 47 rows held out for eval (automatic). Evaluated every 50 steps."
        assert panel.fraction_radio.isChecked() and panel.fraction_spin.value() == 0.1 and not panel.file_edit.text()
        assert panel.counts_label.text().startswith("42 rows train, 5 rows evaluate")
        assert win.draft.config.data.eval_fraction == 0.0 and win.draft.config.data.eval_auto  # still automatic

        panel.none_radio.setChecked(True)  # the user's answer: no evaluation
        assert not win.draft.config.data.eval_auto
        assert summary.text() == "No evaluation: no eval rows are chosen (Dataset tab, Evaluation split)."
        assert panel.none_radio.isChecked()
    finally:
        win.training_tab.shutdown()
        win.chat_tab.shutdown()
