"""The Training tab's widgets fed by hand (no training): metric plots, the log panel, the Runs view."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QObject

from studio.core.config.settings import RunConfig, save_config
from studio.core.runs.events import EventWriter
from studio.core.runs.store import RunDirectory, RunStore
from studio.core.system.units import format_duration as format_seconds
from studio.ui.widgets.qt_log_panel import ERROR, PLAIN, WARNING, QtLogPanel, classify_line
from studio.ui.widgets.qt_metrics_plots import X_TIME, QtMetricsPlots


def ev(kind: str, t: float, /, **fields) -> dict:
    return {"event": kind, "time": t, **fields}


def step(n: int, t: float, loss: float) -> dict:
    return ev("step", t, step=n, epoch=n / 10, loss=loss, learning_rate=1e-3 * n, grad_norm=1.0 / n,
              tokens_per_second=100.0 + n)


# ------------------------------------------------------------------ metric plots


@pytest.fixture
def plots(qtbot):
    widget = QtMetricsPlots()
    qtbot.addWidget(widget)
    return widget


def test_every_plot_gains_one_point_per_step_event(qtbot, plots):
    plots.feed(ev("log", 100.0, pid=1, message="Loading"))
    plots.feed(ev("started", 101.0, pid=1, total_steps=10))
    for n in range(1, 6):
        plots.feed(step(n, 101.0 + n, 3.0 - 0.2 * n))
        assert plots.step_point_count == n
        for name in ("learning_rate", "grad_norm", "tokens_per_second"):
            assert plots.series_plots[name].point_count == n
    plots.feed(ev("eval", 106.5, step=5, eval_loss=2.5))
    assert plots.loss_plot.eval_point_count == 1
    np.testing.assert_array_equal(plots.loss_plot.train_points()[0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(plots.series_points("learning_rate")[1], [1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    # The curves catch up within a redraw tick (coalesced, not one repaint per point).
    qtbot.waitUntil(lambda: plots.grad_norm_plot.curve.xData is not None
                    and len(plots.grad_norm_plot.curve.xData) == 5, timeout=2000)


def test_a_one_step_run_shows_its_point_as_a_dot_until_a_line_can_be_drawn(qtbot, plots):
    plots.feed(ev("started", 101.0, pid=1, total_steps=1))
    plots.feed(step(1, 102.0, 7.5))
    curves = [plots.loss_plot._smooth_curve] + [plot.curve for plot in plots.series_plots.values()]
    qtbot.waitUntil(lambda: all(c.xData is not None and len(c.xData) == 1 for c in curves), timeout=2000)
    assert all(c.opts["symbol"] == "o" for c in curves), "a line through one point has no length"
    plots.feed(step(2, 103.0, 7.0))
    qtbot.waitUntil(lambda: all(len(c.xData) == 2 for c in curves), timeout=2000)
    assert all(c.opts["symbol"] is None for c in curves)


def test_a_few_steps_are_ticked_at_whole_steps_and_plots_are_no_tab_stops(plots):
    from PySide6.QtCore import Qt

    axis = plots.lr_plot.x_axis
    ticks = [v for _, values in axis.tickValues(0.8, 4.2, 400) for v in values]
    assert ticks and all(float(v).is_integer() for v in ticks), ticks
    for plot in [plots.loss_plot, *plots.series_plots.values()]:
        assert plot.plot_widget.focusPolicy() == Qt.FocusPolicy.NoFocus


def test_the_x_axis_switches_between_steps_and_training_time(plots):
    events = [ev("log", 100.0, pid=1), ev("started", 100.0, pid=1, total_steps=10)]
    events += [step(n, 100.0 + 2 * n, 1.0) for n in range(1, 4)]
    for event in events:
        plots.feed(event)
    plots.time_button.setChecked(True)
    assert plots.x_mode == X_TIME
    np.testing.assert_array_equal(plots.loss_plot.train_points()[0], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(plots.series_points("tokens_per_second")[0], [2.0, 4.0, 6.0])
    assert plots.loss_plot.plot_widget.getPlotItem().getAxis("bottom").labelText.startswith("training time")
    plots.feed(step(4, 110.0, 0.9))
    assert plots.loss_plot.train_points()[0][-1] == 10.0, "new points follow the chosen axis"
    plots.steps_button.setChecked(True)
    np.testing.assert_array_equal(plots.loss_plot.train_points()[0], [1, 2, 3, 4])
    assert plots.loss_plot.plot_widget.getPlotItem().getAxis("bottom").labelText == "step"
    assert format_seconds(75) == "1:15" and format_seconds(3725) == "1:02:05"


def test_a_missing_value_is_no_point_on_its_plot(plots):
    plots.feed(ev("started", 1.0, pid=1, total_steps=3))
    plots.feed(ev("step", 2.0, step=1, loss=2.0, learning_rate=0.0, grad_norm=1.0, tokens_per_second=None))
    plots.feed(step(2, 3.0, 1.5))
    assert plots.step_point_count == 2 and plots.lr_plot.point_count == 2
    np.testing.assert_array_equal(plots.series_points("tokens_per_second")[0], [2])
    plots.set_x_mode(X_TIME)  # a reload drops it too
    assert plots.tokens_plot.point_count == 1


def test_the_smoothing_slider_recomputes_the_smoothed_curve(plots):
    plots.feed(ev("started", 1.0, pid=1, total_steps=3))
    for n, loss in enumerate([3.0, 1.0, 2.0], start=1):
        plots.feed(step(n, 1.0 + n, loss))
    plots.set_smoothing(0.0)
    np.testing.assert_array_equal(plots.loss_plot.smoothed_points()[1], [3.0, 1.0, 2.0])
    plots.set_smoothing(0.5)
    np.testing.assert_allclose(plots.loss_plot.smoothed_points()[1], [3.0, 2.0, 2.0])


def test_a_resume_from_an_older_checkpoint_redraws_without_the_retrained_steps(plots):
    for event in [ev("log", 1.0, pid=1), ev("started", 1.0, pid=1, total_steps=10)] + \
                 [step(n, 1.0 + n, 2.0) for n in range(1, 8)]:
        plots.feed(event)
    plots.feed(ev("failed", 9.0, kind="crash", message="killed by SIGKILL"))
    plots.feed(ev("log", 50.0, pid=2, resumed_from="checkpoint-5"))
    plots.feed(ev("started", 51.0, pid=2, total_steps=10, start_step=5))
    plots.feed(step(6, 52.0, 1.5))
    np.testing.assert_array_equal(plots.loss_plot.train_points()[0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(plots.series_points("grad_norm")[0], [1, 2, 3, 4, 5, 6])


class _PaintCounter(QObject):
    """Counts paint events on the plots' viewports. Past `limit` paints since the last reset it swallows
    them: a repaint loop never lets the event loop return, so the test would hang instead of failing."""

    def __init__(self, widgets, limit: int = 200):
        super().__init__()
        self.limit, self.count, self.overflowed = limit, 0, False
        for widget in widgets:
            widget.viewport().installEventFilter(self)

    def reset(self) -> None:
        self.count, self.overflowed = 0, False

    def eventFilter(self, watched, event):  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Paint:
            self.count += 1
            if self.count > self.limit:
                self.overflowed = True
                return True
        return False


@pytest.mark.parametrize("width", range(706, 712))
def test_the_plots_stop_repainting_once_a_1000_step_run_has_been_drawn(qtbot, width):
    # Auto-downsampling keeps every n-th point, so the x extent of what is drawn depended on n, n on the
    # view's range and the range on that extent: at some widths two ranges took turns, a repaint every
    # pass of the event loop, for as long as the window stayed open (issue 12, item 9). These widths
    # put the small plots' views around 180 pixels wide, where 1,000 steps flipped.
    plots = QtMetricsPlots()
    qtbot.addWidget(plots)
    counter = _PaintCounter([plots.loss_plot.plot_widget] + [p.plot_widget for p in plots.series_plots.values()])
    plots.resize(width, 520)
    plots.show()
    qtbot.waitExposed(plots)
    plots.feed(ev("started", 0.0, pid=1, total_steps=1000))
    for n in range(1, 1001):
        plots.feed(ev("step", 0.5 * n, step=n, epoch=n / 100, loss=3.0 / (1 + n / 100), grad_norm=1 + n % 7 / 7,
                      learning_rate=3e-3 * min(1.0, n / 50), tokens_per_second=None if n == 1 else 3e3 + n % 11))
    qtbot.waitUntil(lambda: not plots.redraw_pending, timeout=5000)
    qtbot.wait(300)  # the last redraws paint
    counter.reset()
    qtbot.wait(400)
    views = [p.plot_widget.getPlotItem().getViewBox().width() for p in plots.series_plots.values()]
    assert (counter.count, counter.overflowed) == (0, False), f"{counter.count} repaints with views {views} wide"
    assert len(plots.grad_norm_plot.curve.getOriginalDataset()[0]) == 1000


# ------------------------------------------------------------------ log panel


def test_lines_are_classified():
    assert classify_line("step 3 loss 1.2") == PLAIN
    assert classify_line("/x/modeling_utils.py:3303: FutureWarning: `is_gradient_checkpointing` is deprecated") == \
        WARNING
    assert classify_line("torch.OutOfMemoryError: CUDA out of memory.") == ERROR
    assert classify_line("RuntimeError: boom") == ERROR


@pytest.fixture
def log_panel(qtbot):
    panel = QtLogPanel(interval_ms=20)
    qtbot.addWidget(panel)
    yield panel
    panel.stop()


def test_the_log_panel_follows_a_growing_file_and_highlights_problems(qtbot, tmp_path, log_panel):
    log = tmp_path / "train.log"
    log.write_text("Loading tokenizer\n", encoding="utf-8")
    log_panel.set_path(log)
    log_panel.start()
    assert log_panel.text() == "Loading tokenizer"
    with open(log, "a", encoding="utf-8") as f:
        f.write("Loading weights:   0%|  | 0/20\rLoading weights: 100%| | 20/20\n")
        f.write("UserWarning: something odd\nstep 1 loss 2.0\npartial li")
        f.flush()
        qtbot.waitUntil(lambda: "step 1 loss 2.0" in log_panel.text(), timeout=3000)
        assert "partial li" not in log_panel.text(), "a line being written waits for its end"
        f.write("ne\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                "torch.OutOfMemoryError: CUDA out of memory\nafter the traceback\n")
    qtbot.waitUntil(lambda: "after the traceback" in log_panel.text(), timeout=3000)
    lines = log_panel.text().split("\n")
    assert lines[1] == "Loading weights: 100%| | 20/20", "a progress bar shows its final state"
    assert "partial line" in lines
    kinds = {line: log_panel.line_kind(i) for i, line in enumerate(lines)}
    assert kinds["UserWarning: something odd"] == WARNING
    assert kinds["step 1 loss 2.0"] == PLAIN
    assert kinds['  File "x.py", line 1, in <module>'] == ERROR, "the whole traceback is red"
    assert kinds["torch.OutOfMemoryError: CUDA out of memory"] == ERROR
    assert kinds["after the traceback"] == PLAIN
    assert log_panel.warning_count == 1 and log_panel.error_count == 3
    assert "3 error line(s)" in log_panel.summary.text()


def test_a_warning_printed_on_two_lines_counts_once(qtbot, tmp_path, log_panel):
    import warnings

    # Exactly what Python's warnings module prints: the header line, then the indented source line that warned.
    printed = warnings.formatwarning("`x` is deprecated", FutureWarning, "/lib/modeling_utils.py", 3312,
                                     "        warnings.warn(")
    assert printed.count("\n") == 2 and "warn" in printed.splitlines()[1]
    seen = []
    log_panel.problem_seen.connect(lambda kind, line: seen.append(kind))
    log = tmp_path / "train.log"
    log.write_text("Fast path on\n" + printed + "Fast path on\n  attention: sdpa\n", encoding="utf-8")
    log_panel.set_path(log)
    log_panel.poll(until_end=True)
    lines = log_panel.text().split("\n")
    assert log_panel.warning_count == 1 and seen == [WARNING]
    assert "1 warning(s)" in log_panel.summary.text()
    assert log_panel.line_kind(lines.index("  warnings.warn(")) == WARNING, "the source line is shown as the warning"
    assert log_panel.line_kind(lines.index("  attention: sdpa")) == PLAIN, "an indented line after a plain one"
    with open(log, "a", encoding="utf-8") as f:  # a second warning, its source line in a later read
        f.write(printed.splitlines(keepends=True)[0])
    log_panel.poll(until_end=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(printed.splitlines(keepends=True)[1])
    log_panel.poll(until_end=True)
    assert log_panel.warning_count == 2 and seen == [WARNING, WARNING]


def test_a_long_log_is_shown_from_its_end_in_small_chunks(qtbot, tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)), encoding="utf-8")
    panel = QtLogPanel(chunk_bytes=8 * 1024, initial_tail_bytes=32 * 1024)
    qtbot.addWidget(panel)
    panel.set_path(log)
    assert panel.poll() > 0
    assert "line 0\n" not in panel.text()
    panel.poll(until_end=True)
    assert panel.text().endswith("line 99999")
    assert "KiB are in" in panel.text().split("\n")[0]


# ------------------------------------------------------------------ Runs view


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _make_run(store: RunStore, name: str, losses: list[float], status: str = "completed") -> RunDirectory:
    run = store.new_run(name)
    config = RunConfig(name=name)
    config.model.name_or_path = "/models/tiny"
    config.data.train_file = "/data/support.jsonl"
    config.training.learning_rate = 1e-4 if name.endswith("a") else 2e-4
    save_config(config, run.config_path)
    pid = _dead_pid()
    with EventWriter(run.events_path) as writer:
        writer.write(ev("log", 1000.0, pid=pid))
        writer.write(ev("started", 1001.0, pid=pid, total_steps=len(losses)))
        for n, loss in enumerate(losses, start=1):
            writer.write(step(n, 1001.0 + n, loss))
        if status == "failed":
            writer.write(ev("failed", 1001.0 + len(losses), kind="oom", message="CUDA out of memory", hint="x"))
        else:
            writer.write(ev("finished", 1001.0 + len(losses), status=status, step=len(losses), final_loss=losses[-1]))
    if status != "failed":
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
        (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    return run


@pytest.fixture
def runs_view(qtbot, tmp_path):
    from studio.ui.tabs.runs_view import QtRunsView

    store = RunStore(tmp_path / "runs")
    _make_run(store, "run-a", [3.0, 2.0, 1.5, 1.2])
    _make_run(store, "run-b", [3.0, 2.5, 2.2, 2.0, 1.9, 1.8])
    _make_run(store, "run-oom", [3.0], status="failed")
    view = QtRunsView(store)
    qtbot.addWidget(view)
    view.refresh_now()
    return view


def _row(view, name: str) -> dict[str, str]:
    from studio.ui.tabs.runs_view import COLUMNS

    for row in range(view.table.rowCount()):
        if view.table.item(row, 0).text() == name:
            return {column: view.table.item(row, i).text() for i, column in enumerate(COLUMNS)}
    raise KeyError(name)


def test_the_runs_table_lists_every_run_with_its_summary(runs_view):
    assert runs_view.table.rowCount() == 3
    a = _row(runs_view, "run-a")
    assert a["Model"] == "models/tiny" and a["Dataset"] == "data/support.jsonl" and a["Status"] == "completed"
    assert a["Steps"] == "4/4" and a["Final loss"] == "1.2000" and a["Best loss"] == "1.2000"
    assert a["Best eval"] == "—"
    assert a["Duration"] == "0:05" and a["Adapter"] == "4.0 KiB"
    oom = _row(runs_view, "run-oom")
    assert oom["Status"] == "failed (oom)" and oom["Adapter"] == "—"


def test_selecting_two_runs_overlays_their_loss_curves(runs_view):
    runs_view.select_runs(["run-a", "run-b"])
    assert sorted(runs_view.overlay) == ["run-a", "run-b"]
    np.testing.assert_array_equal(runs_view.overlay["run-b"][0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(runs_view.overlay["run-a"][1], [3.0, 2.0, 1.5, 1.2])
    assert len(runs_view._curves) == 2
    assert sorted(label.text for _, label in runs_view._legend.items) == ["run-a", "run-b"]
    assert "2 runs overlaid" in runs_view.info_label.text()


def test_the_runs_view_says_what_to_do_when_there_are_no_runs_and_hides_an_empty_legend(qtbot, tmp_path,
                                                                                          runs_view):
    from studio.ui.tabs.runs_view import QtRunsView

    assert not runs_view._legend.isVisible() or not runs_view.isVisible()
    runs_view.show()
    assert not runs_view._legend.isVisible(), "nothing selected: no legend box"
    runs_view.select_runs(["run-a"])
    assert runs_view._legend.isVisible()

    empty = QtRunsView(RunStore(tmp_path / "no-runs"))
    qtbot.addWidget(empty)
    empty.refresh_now()
    assert empty.info_label.text().startswith("No runs yet. Start one on the Training tab")


def test_open_config_emits_the_runs_config(qtbot, runs_view):
    runs_view.select_runs(["run-b"])
    assert runs_view.open_config_button.isEnabled()
    with qtbot.waitSignal(runs_view.open_config_requested) as signal:
        runs_view.open_config_button.click()
    assert signal.args[0].training.learning_rate == 2e-4 and signal.args[0].name == "run-b"


def test_delete_asks_and_only_deletes_when_confirmed(runs_view, monkeypatch):
    asked = []
    monkeypatch.setattr(runs_view, "ask_delete_choice", lambda names: asked.append(names) or False)
    runs_view.select_runs(["run-a"])
    assert runs_view.delete_selected() == []
    assert asked == [["run-a"]] and runs_view.table.rowCount() == 3

    monkeypatch.setattr(runs_view, "ask_delete_choice", lambda names: True)
    runs_view.select_runs(["run-a", "run-oom"])
    assert sorted(runs_view.delete_selected()) == ["run-a", "run-oom"]
    assert runs_view.table.rowCount() == 1
    assert [run.name for run in runs_view.store.runs()] == ["run-b"]


def test_the_background_refresh_sees_a_new_run(qtbot, runs_view):
    _make_run(runs_view.store, "run-c", [1.0, 0.5])
    with qtbot.waitSignal(runs_view.refreshed, timeout=10_000):
        runs_view.refresh()
    assert runs_view.table.rowCount() == 4


def test_resume_from_the_runs_view_waits_while_another_run_trains(runs_view):
    (runs_view.store.root / "run-oom" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    runs_view.refresh_now()
    runs_view.select_runs(["run-oom"])
    assert runs_view.resume_button.isEnabled()
    runs_view.set_training_busy(True)
    assert not runs_view.resume_button.isEnabled() and "one run at a time" in runs_view.resume_button.toolTip()
    runs_view.set_training_busy(False)
    assert runs_view.resume_button.isEnabled()


def test_a_retry_of_a_retry_is_not_named_retry_retry():
    from studio.ui.tabs.training_tab import retry_name

    assert retry_name("demo") == "demo-retry"
    assert retry_name("demo-retry") == "demo-retry"
    assert retry_name("demo-retry-2") == "demo-retry"


def test_the_log_follows_its_end_after_a_large_first_read_until_the_user_scrolls_up(qtbot, tmp_path):
    from studio.ui.widgets.qt_log_panel import QtLogPanel

    log = tmp_path / "train.log"
    log.write_text("".join(f"step {i} loss 1.0\n" for i in range(5000)), encoding="utf-8")
    panel = QtLogPanel()
    qtbot.addWidget(panel)
    panel.resize(600, 200)
    panel.show()
    panel.set_path(log)  # re-attaching to a long run: a big first insert
    panel.poll(until_end=True)
    bar = panel.view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=2000)

    with log.open("a", encoding="utf-8") as f:
        f.write("".join(f"step {i} loss 0.9\n" for i in range(5000, 5400)))
    panel.poll(until_end=True)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum(), timeout=2000)

    bar.setValue(bar.maximum() // 2)  # the user scrolls up to read
    with log.open("a", encoding="utf-8") as f:
        f.write("step 5400 loss 0.8\n")
    panel.poll(until_end=True)
    qtbot.wait(50)
    assert bar.value() < bar.maximum() - 4, "reading an earlier line is not interrupted"
