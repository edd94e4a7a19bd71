"""GPU (or host RAM) telemetry panel: memory over time plus live stats.

A view of the Training session's memory readings (`studio.core.sessions.training.MemoryReadings`: the history,
the peaks, the warning); the panel's own part is sampling the telemetry source off the GUI thread and drawing.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QApplication, QGridLayout, QLabel, QVBoxLayout, QWidget

from studio.core.sessions.training import MemoryReadings
from studio.core.system.gpu import NO_GPU_TEXT, GpuReading, HostReading, TelemetrySource
from studio.core.system.units import format_bytes
from studio.ui.background import TaskRunner, WindowTaskState
from studio.ui.widgets import _plot_style as style

__all__ = ["QtGpuPanel"]

_log = logging.getLogger(__name__)

_GIB = float(1024**3)
_JOIN_TIMEOUT_MS = 5000


class _Watched:
    """The pid the sampler reads, shared with its thread (rebinding an attribute is atomic under the GIL)."""

    def __init__(self, pid: int | None):
        self.pid = pid


def _sample(source: TelemetrySource, interval_s: float, watched: _Watched, state: WindowTaskState) -> None:
    """Call ``source.read(pid)`` every ``interval_s`` until cancelled, each reading as a partial result.

    An interruptible wait rather than a QTimer: stop() wakes the loop at once, so closing the window never
    waits an interval.
    """
    failed_before = False
    while not state.cancelled():
        try:
            reading = source.read(watched.pid)
        except Exception:  # noqa: BLE001 - a sampler must outlive bad reads
            if not failed_before:
                _log.exception("telemetry read failed; will keep trying")
                failed_before = True
            reading = None
        if reading is not None:
            state.partial(reading)
        state.wait(interval_s)


class QtGpuPanel(QWidget):
    """Memory-over-time plot and live stats for one :class:`TelemetrySource`.

    With an NVIDIA card it plots card-wide usage, the training process's own
    usage and a dashed line at the card's capacity; without one it plots the
    training process's RAM. Sampling runs on a worker thread (see
    :meth:`start`); :meth:`add_reading` is public so tests and replays can feed
    readings directly.
    """

    def __init__(
        self,
        source: TelemetrySource,
        parent: QWidget | None = None,
        *,
        interval_s: float = 0.5,
        readings: MemoryReadings | None = None,
    ) -> None:
        super().__init__(parent)
        self._source = source
        self._interval_s = interval_s
        self._pid: int | None = None
        self._watched = _Watched(None)
        self._sampler = TaskRunner(self)
        self.readings = readings if readings is not None else MemoryReadings()
        self._memory_warning = False

        self._header = QLabel(self._header_text(source))
        self._header.setObjectName("gpuPanelHeader")
        self._header.setTextFormat(Qt.TextFormat.PlainText)  # device names are data
        self._header.setWordWrap(True)
        self._header.setStyleSheet("font-weight: 600;")

        self._build_plot()
        stats = self._build_stats()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        layout.addWidget(self._header)
        layout.addWidget(self._plot_widget, stretch=1)
        layout.addWidget(self._legend)
        layout.addLayout(stats)

        self._redraw_soon = style.redraw_soon(self._redraw)

        app = QApplication.instance()
        if app is not None:
            # A QThread still running at interpreter exit aborts the process.
            app.aboutToQuit.connect(self.stop)

    # ------------------------------------------------------------ building

    @staticmethod
    def _header_text(source: TelemetrySource) -> str:
        if source.has_gpu or NO_GPU_TEXT.lower() in source.description.lower():
            return source.description
        return f"{NO_GPU_TEXT} — {source.description}"

    def _build_plot(self) -> None:
        has_gpu = self._source.has_gpu
        self._plot_widget = style.make_plot_widget(
            "GPU memory" if has_gpu else "Training process memory (RAM)",
            None,
            "GiB",
            axis_items={"bottom": style.clock_axis()},
        )
        self._plot_widget.setMinimumHeight(160)
        plot = self._plot_widget.getPlotItem()
        plot.setMouseEnabled(x=True, y=False)
        self._card_curve = self._process_curve = self._total_curve = None
        if has_gpu:
            self._card_curve = plot.plot(name="card used", pen=pg.mkPen(style.BLUE, width=2))
            self._process_curve = plot.plot(
                name="training process", pen=pg.mkPen(style.GREEN, width=2)
            )
            self._total_curve = plot.plot(
                name="card total",
                pen=pg.mkPen(style.GREY, width=1.5, style=Qt.PenStyle.DashLine),
            )
        else:
            self._process_curve = plot.plot(
                name="training process RSS", pen=pg.mkPen(style.BLUE, width=2)
            )
        for curve in (self._card_curve, self._process_curve):
            if curve is not None:
                # "peak" so a short allocation spike, the thing that OOMs a
                # run, stays visible however long the history gets.
                style.enable_fast_downsampling(curve, "peak")
        self._placeholder = pg.TextItem(
            "Waiting for the first reading…" if has_gpu else "Start a run to see its memory use",
            color=style.MUTED,
            anchor=(0.5, 0.5),
        )
        plot.addItem(self._placeholder, ignoreBounds=True)
        self._show_placeholder()
        # Below the plot rather than pyqtgraph's in-plot legend: memory curves
        # sweep the whole view, so any in-plot corner ends up covering data.
        self._legend = QLabel(self._legend_html(has_gpu))
        self._legend.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._legend.setVisible(has_gpu)

    @staticmethod
    def _legend_html(has_gpu: bool) -> str:
        if not has_gpu:
            return ""
        entries = [
            (style.BLUE, "solid", "card used"),
            (style.GREEN, "solid", "training process"),
            (style.GREY, "dashed", "card total"),
        ]
        swatch = (
            '<span style="color:{0}; font-weight:bold;">{1}</span>'
            '&nbsp;<span style="color:{2};">{3}</span>'
        )
        return "&nbsp;&nbsp;&nbsp;".join(
            swatch.format(colour, "━━" if kind == "solid" else "╍╍", style.FOREGROUND, text)
            for colour, kind, text in entries
        )

    def _build_stats(self) -> QGridLayout:
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(2)
        self._value_labels: dict[str, QLabel] = {}
        if self._source.has_gpu:
            rows = [
                ("memory", "Card memory"), ("utilization", "Utilisation"),
                ("process", "Process"), ("temperature", "Temperature"),
                ("peak", "Peak"), ("power", "Power"),
            ]  # fmt: skip
        else:
            rows = [("memory", "Process RAM"), ("peak", "Peak RAM")]
        for i, (key, caption) in enumerate(rows):
            name = QLabel(caption + ":")
            name.setStyleSheet(f"color: {style.MUTED};")
            value = QLabel("—")
            value.setObjectName(f"gpuPanel_{key}")
            self._value_labels[key] = value
            row, col = divmod(i, 2)
            grid.addWidget(name, row, col * 2)
            grid.addWidget(value, row, col * 2 + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        return grid

    # ----------------------------------------------------------------- API

    @property
    def source(self) -> TelemetrySource:
        """Where readings come from."""
        return self._source

    @property
    def header_text(self) -> str:
        """The device line shown above the plot."""
        return self._header.text()

    @property
    def pid(self) -> int | None:
        """The watched training process, ``None`` when idle."""
        return self._pid

    def set_pid(self, pid: int | None) -> None:
        """Watch ``pid`` (the training child); ``None`` when no run is active.

        A new pid starts a new run, so the peaks restart from zero.
        """
        if pid is not None and pid != self._pid:
            self.reset_peak()
        self._pid = pid
        self._watched.pid = pid

    @property
    def is_running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._sampler.busy

    def start(self) -> None:
        """Start sampling at ``1 / interval_s`` Hz on a worker thread (idempotent)."""
        if self.is_running:
            return
        source, interval_s, watched = self._source, self._interval_s, self._watched
        self._sampler.start(lambda state: _sample(source, interval_s, watched, state), on_partial=self.add_reading,
                            name="telemetry sampler")

    def stop(self) -> None:
        """Stop sampling and join the thread; call from the owner's closeEvent."""
        # Reads are a few NVML/psutil calls, so the join is normally instant; the cap only matters if a driver
        # call hangs (GPU fell off the bus): the task then stays referenced until its read returns.
        if not self._sampler.shutdown(_JOIN_TIMEOUT_MS):
            _log.warning("telemetry thread did not stop within %d ms", _JOIN_TIMEOUT_MS)

    def end_run(self) -> None:
        """The watched process ended: stop sampling and stop showing its last reading as current (the curve and
        the peak stay: they are the run's history)."""
        self.set_pid(None)
        self.stop()
        for key, label in self._value_labels.items():
            if key != "peak":
                label.setText("—")
        self._set_warning(False)

    def add_reading(self, reading: GpuReading | HostReading | None) -> None:
        """Record one reading in the session's readings: update the labels now and the plot shortly."""
        if reading is None:
            return
        self.readings.add(reading)
        self._update_labels(reading)
        self._redraw_soon()

    def clear(self) -> None:
        """Forget the history and peaks."""
        self.readings.clear()
        for label in self._value_labels.values():
            label.setText("—")
        self._set_warning(False)
        self._redraw()

    def reset_peak(self) -> None:
        """Restart peak tracking (a new run began)."""
        self.readings.reset_peak()
        if "peak" in self._value_labels:
            self._value_labels["peak"].setText("—")

    @property
    def reading_count(self) -> int:
        """Readings recorded since construction or :meth:`clear`."""
        return len(self.readings.times)

    @property
    def peak_bytes(self) -> int | None:
        """Highest card usage (GPU) or process RSS (host) since the last reset."""
        return self.readings.peak_bytes

    @property
    def process_peak_bytes(self) -> int | None:
        """Highest per-process card usage since the last reset (GPU only)."""
        return self.readings.process_peak_bytes

    @property
    def memory_warning(self) -> bool:
        """Whether the latest reading is above MemoryReadings.WARNING_FRACTION of total."""
        return self._memory_warning

    def value_text(self, key: str) -> str:
        """Text of a stat label: ``memory``, ``process``, ``utilization``,
        ``temperature``, ``power`` or ``peak`` (the last three GPU-only)."""
        return self._value_labels[key].text()

    # ------------------------------------------------------------- Qt hooks

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.stop()
        super().closeEvent(event)

    # ------------------------------------------------------------ internals

    def _update_labels(self, reading: GpuReading | HostReading) -> None:
        labels, readings = self._value_labels, self.readings
        labels["memory"].setText(_fmt_used_of_total(readings.used_bytes, readings.total_bytes or 0))
        if isinstance(reading, GpuReading):
            process = format_bytes(reading.process_used_bytes, style='memory')
            if readings.process_peak_bytes is not None:
                process += f" (peak {format_bytes(readings.process_peak_bytes, style='memory')})"
            labels["process"].setText(process)
            labels["utilization"].setText(_fmt(reading.utilization_pct, "{:.0f}%"))
            labels["temperature"].setText(_fmt(reading.temperature_c, "{:.0f} °C"))
            labels["power"].setText(_fmt(reading.power_w, "{:.0f} W"))
        labels["peak"].setText(format_bytes(readings.peak_bytes, style='memory'))
        self._set_warning(readings.nearly_full)

    def _set_warning(self, warning: bool) -> None:
        if warning == self._memory_warning:
            return
        self._memory_warning = warning
        label = self._value_labels["memory"]
        label.setStyleSheet(f"color: {style.RED}; font-weight: 600;" if warning else "")
        label.setToolTip(
            "Memory is nearly full: training may run out of memory. Try a smaller "
            "batch size, a shorter max length or gradient checkpointing."
            if warning
            else ""
        )

    def _show_placeholder(self) -> None:
        # Without data pyqtgraph would label a clock axis around 1970; show
        # the last minute instead so the empty plot already reads as "now".
        now = time.time()
        plot = self._plot_widget.getPlotItem()
        plot.setXRange(now - 60.0, now, padding=0)
        plot.setYRange(0.0, 1.0, padding=0)
        self._placeholder.setPos(now - 30.0, 0.5)
        self._placeholder.setVisible(True)

    def _redraw(self) -> None:
        self._redraw_soon.cancel()
        readings = self.readings
        if not readings.times:
            self._process_curve.setData([], [])
            for curve in (self._card_curve, self._total_curve):
                if curve is not None:
                    curve.setData([], [])
            self._show_placeholder()
            return
        if self._placeholder.isVisible():
            self._placeholder.setVisible(False)
            self._plot_widget.getPlotItem().enableAutoRange(x=True)
        times = np.asarray(readings.times)
        process = np.asarray(readings.process_used) / _GIB
        self._process_curve.setData(times, process, connect="finite")
        top = float(np.nanmax(process)) if len(process) and np.isfinite(process).any() else 0.0
        if self._card_curve is not None:
            card = np.asarray(readings.card_used) / _GIB
            self._card_curve.setData(times, card, connect="finite")
            if len(card) and np.isfinite(card).any():
                top = max(top, float(np.nanmax(card)))
        if self._total_curve is not None and readings.total_bytes and len(times):
            total = readings.total_bytes / _GIB
            self._total_curve.setData([times[0], times[-1]], [total, total])
            top = max(top, total)
        plot = self._plot_widget.getPlotItem()
        # Memory reads best against zero; autoscaling y would exaggerate noise.
        plot.setYRange(0.0, max(top, 0.1) * 1.08, padding=0)


def _fmt_used_of_total(used: int, total: int) -> str:
    if not total:
        return format_bytes(used, style='memory')
    if total >= _GIB:
        # One unit for both numbers keeps the label short enough for a sidebar.
        text = f"{used / _GIB:.1f} / {total / _GIB:.1f} GiB"
    else:
        text = f"{format_bytes(used, style='memory')} / {format_bytes(total, style='memory')}"
    return f"{text} ({used / total:.0%})"


def _fmt(value: float | None, template: str) -> str:
    return "—" if value is None else template.format(value)
