"""benchmarks/first_paint.py and benchmarks/plot_refresh.py in a quick mode: the bookkeeping, and that the
windows really painted. No timing is asserted: the figures are measured side by side by the scripts."""

from __future__ import annotations

import json
import statistics

import pytest
from ui_benchmarks_shared import BENCHMARKS, _load, first_paint  # noqa: F401  (shared with the other half)







@pytest.fixture(scope="module")
def plot_refresh():
    return _load("plot_refresh")


def test_first_paint_parses_importtime_and_rejects_unknown_windows(first_paint, tmp_path):
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       120 |        120 |   json.decoder\n"
              "import time:      2500 |      40000 | studio.ui.main_window\n"
              "This plugin does not support propagateSizeHints()\n")
    assert first_paint._parse_importtime(stderr) == [("json.decoder", 0.12, 0.12),
                                                     ("studio.ui.main_window", 2.5, 40.0)]
    with pytest.raises(ValueError):
        first_paint.launch("torch", tmp_path, tmp_path)
    # A window that does not paint in time is reported as such (the watchdog runs outside Qt's event loop).
    late = first_paint.launch("baseline", tmp_path / "home", tmp_path / "qt-settings", timeout_s=0.001)
    assert late["painted"] is False and "no paint within" in late["error"]


# ------------------------------------------------------------------------------------------ plot refresh


def test_plot_refresh_measures_every_plot_side_by_side(plot_refresh, qapp, capsys):
    points, repeats, warmup = 20_000, 2, 1
    assert plot_refresh.main(["--points", str(points), "--repeats", str(repeats), "--warmup", str(warmup),
                              "--same-look-repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    plots = result["plots"]
    assert list(plots) == ["training_tab_loss_plot", "qt_loss_plot", "naive", "naive_same_look"]
    for name, r in plots.items():
        expected = 1 if name == "naive_same_look" else repeats
        assert r["refreshes"] == len(r["runs_ms"]) == expected
        assert r["median_ms"] == round(statistics.median(r["runs_ms"]), 4)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["paints_per_refresh"] >= 1  # every refresh really repainted the plot
        assert r["points"] == points + warmup + expected  # one point appended per refresh
    baseline = plots["naive"]["median_ms"]
    assert result["ratio"] == round(plots["training_tab_loss_plot"]["median_ms"] / baseline, 4)
    assert result["ratios_vs_baseline"]["qt_loss_plot"] == round(plots["qt_loss_plot"]["median_ms"] / baseline, 4)
    assert "naive" not in result["ratios_vs_baseline"]
    assert result["meets_target"] == (plots["training_tab_loss_plot"]["median_ms"] < 10.0)

    # The naive plots hand every point to the painter; the studio's downsample and clip to ~2 per pixel column.
    assert plots["naive"]["painted_points"] == plots["naive"]["points"]
    assert plots["naive_same_look"]["painted_points"] == 2 * plots["naive_same_look"]["points"]
    assert 0 < plots["training_tab_loss_plot"]["painted_points"] < points / 2

    table = plot_refresh.markdown(result)
    assert "| naive pg.PlotWidget, 1 curve, 1-px pen, no antialiasing, setData of every point (baseline) |" in table
    assert f"**{result['ratio']:.2f}x**" in table


def test_plot_refresh_loss_series_is_shared_and_deterministic(plot_refresh):
    steps, losses = plot_refresh.loss_series(1000)
    again_steps, again_losses = plot_refresh.loss_series(1000)
    assert steps[0] == 1 and steps[-1] == 1000 and len(losses) == 1000
    assert (losses == again_losses).all() and (steps == again_steps).all()
    assert losses[:100].mean() > losses[-100:].mean()  # a falling loss curve
