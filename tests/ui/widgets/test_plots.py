"""Tests for the live plots: QtLossPlot and QtGpuPanel."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from studio.core.system.gpu import NO_GPU_TEXT, GpuReading, HostReading, HostTelemetry
from studio.ui.background import running_tasks
from studio.ui.widgets._growing_buffer import GrowingBuffer
from studio.ui.widgets.qt_gpu_panel import QtGpuPanel
from studio.ui.widgets.qt_loss_plot import QtLossPlot

GIB = 1024**3


# ------------------------------------------------------------------ buffer


def test_growing_buffer_doubles_and_keeps_rows():
    buf = GrowingBuffer(2, capacity=4)
    for i in range(9):
        buf.append(i, i * 10)
    assert len(buf) == 9
    assert buf.capacity == 16
    np.testing.assert_array_equal(buf.column(0), np.arange(9))
    np.testing.assert_array_equal(buf.column(1), np.arange(9) * 10)
    assert buf.last(1) == 80
    buf.clear()
    assert len(buf) == 0 and buf.last(0) is None


def test_growing_buffer_rejects_ragged_rows():
    buf = GrowingBuffer(2)
    with pytest.raises(ValueError):
        buf.append(1.0)
    with pytest.raises(ValueError):
        buf.replace([[1, 2], [1]])


# --------------------------------------------------------------- loss plot


@pytest.fixture
def loss_plot(qtbot):
    plot = QtLossPlot()
    qtbot.addWidget(plot)
    return plot


def test_loss_plot_gains_one_point_per_add(loss_plot):
    losses = [2.0, 1.5, 1.7, 1.2]
    for i, loss in enumerate(losses):
        loss_plot.add_train_point(i + 1, loss)
        assert loss_plot.train_point_count == i + 1
    steps, values = loss_plot.train_points()
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])
    np.testing.assert_array_equal(values, losses)


def test_smoothed_curve_matches_length_and_ema(loss_plot):
    assert loss_plot.smoothing == 0.6
    for i, loss in enumerate([2.0, 1.0, 1.0]):
        loss_plot.add_train_point(i, loss)
    steps, smoothed = loss_plot.smoothed_points()
    assert len(smoothed) == len(steps) == loss_plot.train_point_count
    assert smoothed[0] == 2.0
    assert smoothed[1] == pytest.approx(0.6 * 2.0 + 0.4 * 1.0)
    assert smoothed[2] == pytest.approx(0.6 * smoothed[1] + 0.4 * 1.0)


def test_changing_smoothing_recomputes(loss_plot):
    loss_plot.set_points([0, 1, 2], [3.0, 1.0, 2.0])
    loss_plot.smoothing = 0.0
    np.testing.assert_array_equal(loss_plot.smoothed_points()[1], [3.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        loss_plot.smoothing = 1.0


def test_nan_loss_does_not_poison_smoothing(loss_plot):
    for i, loss in enumerate([2.0, math.nan, 1.0]):
        loss_plot.add_train_point(i, loss)
    smoothed = loss_plot.smoothed_points()[1]
    assert smoothed[1] == 2.0
    assert smoothed[2] == pytest.approx(0.6 * 2.0 + 0.4 * 1.0)


def test_buffer_growth_keeps_every_point(loss_plot):
    n = 5000  # several doublings past the initial capacity
    steps = np.arange(n)
    losses = 1.0 + np.sin(steps / 50.0)
    for s, loss in zip(steps, losses, strict=True):
        loss_plot.add_train_point(int(s), float(loss))
    got_steps, got_losses = loss_plot.train_points()
    np.testing.assert_array_equal(got_steps, steps)
    np.testing.assert_array_equal(got_losses, losses)
    assert len(loss_plot.smoothed_points()[1]) == n


def test_redraw_is_coalesced_but_catches_up(qtbot, loss_plot):
    for i in range(1000):
        loss_plot.add_train_point(i, 1.0 / (i + 1))
    # Nothing painted synchronously: the timer does it.
    assert loss_plot._raw_curve.xData is None or len(loss_plot._raw_curve.xData) < 1000
    qtbot.waitUntil(
        lambda: (
            loss_plot._raw_curve.xData is not None
            and len(loss_plot._raw_curve.xData) == 1000
            and len(loss_plot._smooth_curve.xData) == 1000
        ),
        timeout=2000,
    )


def test_eval_points_bulk_load_and_clear(qtbot, loss_plot):
    loss_plot.add_eval_point(100, 1.4)
    loss_plot.add_eval_point(200, 1.2)
    assert loss_plot.eval_point_count == 2
    np.testing.assert_array_equal(loss_plot.eval_points()[1], [1.4, 1.2])

    loss_plot.set_points(np.arange(10), np.linspace(2, 1, 10))
    assert loss_plot.train_point_count == 10
    assert len(loss_plot._raw_curve.xData) == 10  # bulk load draws at once
    with pytest.raises(ValueError):
        loss_plot.set_points([1, 2], [1.0])

    loss_plot.clear()
    assert loss_plot.train_point_count == 0
    assert loss_plot.eval_point_count == 0
    assert len(loss_plot.train_points()[0]) == 0


def test_loss_plot_labels_and_legend(loss_plot):
    plot = loss_plot.plot_widget.getPlotItem()
    assert plot.getAxis("bottom").labelText == "step"
    assert plot.getAxis("left").labelText == "loss"
    names = [label.text for _, label in plot.legend.items]
    assert names == ["train (raw)", "train (smoothed)", "eval"]


# --------------------------------------------------------------- GPU panel


class FakeGpuSource:
    """A TelemetrySource that replays canned readings from any thread."""

    has_gpu = True
    description = "Fake RTX 9000 (8.0 GiB)"

    def __init__(self, used_bytes: int = 2 * GIB):
        self.used_bytes = used_bytes
        self.calls: list[tuple[int | None, int]] = []

    def read(self, pid):
        self.calls.append((pid, threading.get_ident()))
        return gpu_reading(len(self.calls), self.used_bytes)


class FakeHostSource:
    """A no-GPU TelemetrySource with a description that omits the phrase."""

    has_gpu = False
    description = "showing the training process's RAM"

    def read(self, pid):
        return None if pid is None else HostReading(0.0, 1 * GIB, 16 * GIB)


def gpu_reading(t: float, used: int, process: int | None = None, **kw) -> GpuReading:
    values = dict(utilization_pct=87.0, temperature_c=None, power_w=114.6)
    values.update(kw)
    return GpuReading(
        time=1000.0 + t,
        device_name="Fake RTX 9000",
        card_used_bytes=used,
        card_total_bytes=8 * GIB,
        process_used_bytes=process,
        **values,
    )


@pytest.fixture
def make_panel(qtbot):
    panels = []

    def make(source):
        panel = QtGpuPanel(source, interval_s=0.02)
        qtbot.addWidget(panel)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.stop()


def test_the_memory_plots_time_axis_shows_clock_times_even_over_a_few_seconds(qtbot):
    import pyqtgraph as pg

    from studio.ui.widgets._plot_style import clock_axis

    axis = clock_axis()
    widget = pg.PlotWidget(axisItems={"bottom": axis})
    qtbot.addWidget(widget)
    widget.resize(400, 200)
    widget.grab()  # a first paint gives the axis its font metrics
    start = 1_795_000_000.0
    values = axis.tickValues(start, start + 3.0, 400)  # a run of a few seconds
    labels = [label for spacing, ticks in values for label in axis.tickStrings(ticks, 1.0, spacing)]
    assert labels and all(label.count(":") == 2 for label in labels), labels  # 12:00:18, not "18.000"


def test_gpu_panel_updates_labels_and_peak(make_panel):
    panel = make_panel(FakeGpuSource())
    assert panel.header_text == "Fake RTX 9000 (8.0 GiB)"
    assert panel.value_text("utilization") == "—"

    panel.add_reading(gpu_reading(0, 4 * GIB, 3 * GIB))
    assert panel.value_text("memory") == "4.0 / 8.0 GiB (50%)"
    assert panel.value_text("process") == "3.0 GiB (peak 3.0 GiB)"
    assert panel.value_text("utilization") == "87%"
    assert panel.value_text("temperature") == "—"
    assert panel.value_text("power") == "115 W"
    assert panel.value_text("peak") == "4.0 GiB"

    panel.add_reading(gpu_reading(1, 6 * GIB, 5 * GIB, temperature_c=71.0))
    panel.add_reading(gpu_reading(2, 5 * GIB, None, power_w=None))
    assert panel.value_text("temperature") == "—"
    assert panel.value_text("power") == "—"
    assert panel.value_text("process").startswith("—")
    assert panel.peak_bytes == 6 * GIB
    assert panel.process_peak_bytes == 5 * GIB
    assert panel.value_text("peak") == "6.0 GiB"
    assert panel.reading_count == 3
    assert panel.memory_warning is False


def test_gpu_panel_plots_every_reading(qtbot, make_panel):
    panel = make_panel(FakeGpuSource())
    for i in range(1500):  # beyond the buffer's initial capacity
        panel.add_reading(gpu_reading(i, (1 + i % 4) * GIB, GIB))
    qtbot.waitUntil(
        lambda: panel._card_curve.xData is not None and len(panel._card_curve.xData) == 1500,
        timeout=2000,
    )
    np.testing.assert_array_equal(panel._card_curve.xData, 1000.0 + np.arange(1500))
    assert panel._process_curve.yData[-1] == pytest.approx(1.0)


def test_gpu_panel_warns_above_95_percent(make_panel):
    panel = make_panel(FakeGpuSource())
    panel.add_reading(gpu_reading(0, int(7.5 * GIB)))  # 93.75 %
    assert panel.memory_warning is False
    panel.add_reading(gpu_reading(1, int(7.9 * GIB)))  # 98.75 %
    assert panel.memory_warning is True
    label = panel._value_labels["memory"]
    assert "color" in label.styleSheet()
    assert label.toolTip()
    panel.add_reading(gpu_reading(2, 4 * GIB))
    assert panel.memory_warning is False
    assert label.styleSheet() == ""


def test_no_gpu_header_and_ram_plot(make_panel):
    panel = make_panel(FakeHostSource())
    assert panel.header_text.startswith(NO_GPU_TEXT)
    panel.add_reading(HostReading(1.0, 2 * GIB, 16 * GIB))
    panel.add_reading(HostReading(2.0, 3 * GIB, 16 * GIB))
    assert panel.value_text("memory") == "3.0 / 16.0 GiB (19%)"
    assert panel.peak_bytes == 3 * GIB
    assert panel.reading_count == 2
    panel.add_reading(HostReading(3.0, int(15.5 * GIB), 16 * GIB))
    assert panel.memory_warning is True


def test_gpu_panel_clear_returns_to_placeholder(make_panel):
    panel = make_panel(FakeGpuSource())
    assert panel._placeholder.isVisible()
    panel.add_reading(gpu_reading(0, 4 * GIB, 1 * GIB))
    panel._redraw()
    assert not panel._placeholder.isVisible()
    panel.clear()
    assert panel.reading_count == 0
    assert panel.peak_bytes is None
    assert panel.value_text("memory") == "—"
    assert panel._placeholder.isVisible()


def test_real_host_fallback_header(make_panel):
    panel = make_panel(HostTelemetry())
    assert NO_GPU_TEXT in panel.header_text
    assert panel.header_text.count(NO_GPU_TEXT) == 1


def test_set_pid_resets_peak(make_panel):
    panel = make_panel(FakeGpuSource())
    panel.add_reading(gpu_reading(0, 6 * GIB, 5 * GIB))
    panel.set_pid(4242)
    assert panel.pid == 4242
    assert panel.peak_bytes is None
    panel.add_reading(gpu_reading(1, 3 * GIB, 2 * GIB))
    assert panel.peak_bytes == 3 * GIB
    panel.set_pid(None)
    assert panel.peak_bytes == 3 * GIB  # going idle keeps the finished run's peak


def test_gpu_panel_thread_starts_and_stops(qtbot, make_panel):
    source = FakeGpuSource()
    panel = make_panel(source)
    panel.set_pid(1234)
    panel.start()
    panel.start()  # idempotent
    assert panel.is_running
    qtbot.waitUntil(lambda: panel.reading_count >= 3, timeout=3000)
    assert all(pid == 1234 for pid, _ in source.calls)
    assert all(tid != threading.get_ident() for _, tid in source.calls)

    panel.set_pid(None)
    qtbot.waitUntil(lambda: source.calls[-1][0] is None, timeout=3000)

    panel.stop()
    assert not panel.is_running
    calls = len(source.calls)
    qtbot.wait(100)
    assert len(source.calls) == calls  # no reads after stop()
    panel.stop()  # idempotent

    panel.start()  # restartable
    qtbot.waitUntil(lambda: len(source.calls) > calls, timeout=3000)
    panel.close()  # closeEvent stops the thread
    assert not panel.is_running


def test_gpu_panel_thread_survives_failing_reads(qtbot, make_panel):
    class Flaky(FakeGpuSource):
        def read(self, pid):
            result = super().read(pid)
            if len(self.calls) <= 2:
                raise RuntimeError("transient")
            return result

    panel = make_panel(Flaky())
    panel.start()
    qtbot.waitUntil(lambda: panel.reading_count >= 1, timeout=3000)
    panel.stop()
    assert not panel.is_running


def test_gpu_panel_stop_does_not_hang_on_a_stuck_read(qtbot, make_panel, monkeypatch):
    from studio.ui.widgets import qt_gpu_panel

    release = threading.Event()
    entered = threading.Event()

    class Stuck(FakeGpuSource):
        def read(self, pid):
            entered.set()
            release.wait(10)
            return super().read(pid)

    monkeypatch.setattr(qt_gpu_panel, "_JOIN_TIMEOUT_MS", 50)
    panel = make_panel(Stuck())
    before = running_tasks()
    panel.start()
    qtbot.waitUntil(entered.is_set, timeout=3000)
    panel.stop()  # returns after the cap instead of blocking the GUI
    assert not panel.is_running
    stuck = running_tasks() - before  # kept referenced until its read returns
    assert len(stuck) == 1
    release.set()
    qtbot.waitUntil(lambda: not stuck & running_tasks(), timeout=3000)
