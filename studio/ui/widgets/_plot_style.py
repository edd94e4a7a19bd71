"""Shared look of the app's pyqtgraph plots: white background, dark axes.

Kept in one place so the loss plot and the GPU panel read as one family in
screenshots and docs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg

if TYPE_CHECKING:
    from superqt.utils._throttler import ThrottledCallable

BACKGROUND = "w"
FOREGROUND = "#303030"
MUTED = "#707070"
GRID_ALPHA = 0.18

# Tableau-like colours: distinct on white and for common colour blindness.
BLUE = "#1f77b4"
ORANGE = "#e8710a"
GREEN = "#2ca02c"
RED = "#c62828"
GREY = "#7f7f7f"

_configured = False


def configure_pyqtgraph() -> None:
    """Apply global pyqtgraph options once, before the first plot is built."""
    global _configured
    if _configured:
        return
    # Global on purpose: per-item antialias is easy to forget on new curves,
    # and downsampling + clip-to-view keep the painted point count small.
    pg.setConfigOptions(antialias=True)
    _configured = True


def make_plot_widget(
    title: str,
    x_label: str | None,
    y_label: str | None,
    axis_items: dict | None = None,
) -> pg.PlotWidget:
    """A white PlotWidget with dark axes, a light grid and a title.

    A ``None`` label leaves that axis unlabelled (e.g. clock-time axes).
    """
    configure_pyqtgraph()
    widget = pg.PlotWidget(background=BACKGROUND, axisItems=axis_items)
    plot = widget.getPlotItem()
    plot.setTitle(title, color=FOREGROUND, size="11pt")
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(FOREGROUND))
        axis.setTextPen(pg.mkPen(FOREGROUND))
        # Units are fixed (GiB, loss); an automatic "(x0.001)" prefix only confuses.
        axis.enableAutoSIPrefix(False)
    for side, label in (("bottom", x_label), ("left", y_label)):
        if label is not None:
            plot.setLabel(side, label, color=FOREGROUND)
    plot.showGrid(x=True, y=True, alpha=GRID_ALPHA)
    # Plots are read with the mouse; as Tab stops (the view and its viewport each) they only lengthen the way
    # from the controls to the log.
    from PySide6.QtCore import Qt

    widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    widget.viewport().setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return widget


def add_legend(plot: pg.PlotItem) -> pg.LegendItem:
    """A compact top-right legend on a translucent white card."""
    return plot.addLegend(
        offset=(-8, 8),
        brush=pg.mkBrush(255, 255, 255, 215),
        pen=pg.mkPen(0, 0, 0, 45),
        labelTextColor=FOREGROUND,
        labelTextSize="9pt",
        verSpacing=-4,
    )


def enable_fast_downsampling(curve: pg.PlotDataItem, method: str = "peak") -> None:
    """Auto-downsample and clip ``curve`` so long histories repaint quickly."""
    curve.setDownsampling(auto=True, method=method)
    curve.setClipToView(True)
    # pyqtgraph keeps ~5 samples per pixel by default; one (a min/max pair for
    # "peak") looks the same and paints several times faster with thick
    # antialiased pens. There is no public setter, hence the guarded access.
    if "autoDownsampleFactor" in curve.opts:
        curve.opts["autoDownsampleFactor"] = 1.0
    _x_bounds_from_all_points(curve)


def _x_bounds_from_all_points(curve: pg.PlotDataItem) -> None:
    """Auto-range x over every point of `curve`, not over the points it draws.

    Downsampled by n, a curve draws every n-th point, so the x extent it reports moves by up to n-1
    steps with n; n follows the view's range and auto-range sets that range from the extent. Near a
    boundary between two n that is a loop: n=5 gives a range that asks for n=6, whose range asks for
    n=5, one repaint per pass of the event loop for as long as the window is open (a 1,000-step run
    kept a core busy after it ended). The extent of all the points does not depend on n.
    """
    drawn_bounds = curve.dataBounds

    def data_bounds(ax, frac=1.0, orthoRange=None):  # noqa: N803 - pyqtgraph API
        bounds = drawn_bounds(ax, frac, orthoRange)
        if ax != 0 or bounds[0] is None or frac != 1.0 or orthoRange is not None:
            return bounds
        xs = curve.getOriginalDataset()[0]
        if xs is None or len(xs) == 0:
            return bounds
        return float(np.nanmin(xs)), float(np.nanmax(xs))

    # The instance attribute shadows PlotDataItem.dataBounds, which ViewBox's auto-range calls.
    curve.dataBounds = data_bounds


_AUTO_RANGE_PADDING = 0.04


def make_axes_cheap(plot_item: pg.PlotItem, left_axis_width: int = 52) -> None:
    """Tick and range settings that keep a live plot's repaint short and stop it from oscillating."""
    for side in ("left", "bottom"):
        # Major and minor grid lines only: the sub-minor ones are barely visible and cost half of a repaint.
        plot_item.getAxis(side).setStyle(maxTickLevel=1)
    stabilise_auto_range(plot_item, left_axis_width)


def stabilise_auto_range(plot_item: pg.PlotItem, left_axis_width: int = 52) -> None:
    """Make auto-range independent of the plot's pixel size, so it cannot feed back on itself.

    pyqtgraph pads an auto range by a fraction that depends on the view's size in pixels, the view's
    size depends on the tick labels, and the labels on the range (and, with clip-to-view and
    auto-downsampling, the data shown depends on the view too). Live, that loop can settle into two
    ranges the view flips between, a repaint every frame, forever. A fixed padding and a fixed label
    width break it.
    """
    plot_item.getAxis("left").setWidth(left_axis_width)
    # The instance attribute shadows ViewBox.suggestPadding, which the auto-range code calls.
    plot_item.getViewBox().suggestPadding = lambda axis: _AUTO_RANGE_PADDING


# Plots coalesce bursts of new points into one repaint at most this often: 10 Hz is smooth to the eye, and
# trainers can log far faster than that.
REDRAW_INTERVAL_MS = 100


def host_plot(owner, plot_widget: pg.PlotWidget, redraw) -> "ThrottledCallable":
    """Fill `owner` with `plot_widget` (no margins); returns `redraw` throttled (redraw_soon)."""
    from PySide6.QtWidgets import QVBoxLayout

    layout = QVBoxLayout(owner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(plot_widget)
    return redraw_soon(redraw)


def redraw_soon(redraw) -> "ThrottledCallable":
    """`redraw`, throttled: calls within REDRAW_INTERVAL_MS of each other make one redraw at the end of it (a plot
    fed at every logged step repaints at most ten times a second); `.cancel()` drops a pending one."""
    from superqt.utils import qthrottled

    return qthrottled(redraw, timeout=REDRAW_INTERVAL_MS, leading=False)


def clock_axis() -> pg.DateAxisItem:
    """A bottom axis of wall-clock times that never drops to pyqtgraph's sub-second level: over a short run
    that level labels ticks "18.000 19.000" (seconds and milliseconds), which reads as anything but a time."""
    from pyqtgraph.graphicsItems.DateAxisItem import MS_ZOOM_LEVEL

    axis = pg.DateAxisItem(orientation="bottom")
    axis.zoomLevels = type(axis.zoomLevels)(
        (spacing, level) for spacing, level in axis.zoomLevels.items() if level is not MS_ZOOM_LEVEL)
    return axis


def mark_lone_point(curve: pg.PlotDataItem, count: int) -> None:
    """Draw a dot while a curve has a single point: a line through one point has no length, so a one-step run
    would show an empty plot."""
    lone = count == 1
    if lone == (curve.opts.get("symbol") is not None):
        return
    if lone:
        colour = curve.opts["pen"].color() if hasattr(curve.opts.get("pen"), "color") else FOREGROUND
        curve.setSymbol("o")
        curve.setSymbolSize(7)
        curve.setSymbolBrush(colour)
        curve.setSymbolPen(colour)
    else:
        curve.setSymbol(None)
