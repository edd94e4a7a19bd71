"""benchmarks/first_paint.py and benchmarks/plot_refresh.py in a quick mode: the bookkeeping, and that the
windows really painted. No timing is asserted: the figures are measured side by side by the scripts."""

from __future__ import annotations

import json
import statistics

from ui_benchmarks_shared import BENCHMARKS, _load, first_paint  # noqa: F401  (shared with the other half)







# ------------------------------------------------------------------------------------------- first paint


def test_first_paint_launches_both_windows_and_keeps_the_books(first_paint, demo_assets, tmp_path, capsys):
    home = first_paint.prepare_home(tmp_path / "home", demo_source=demo_assets.root)
    assert (home / "demo" / "demo.toml").is_file()

    assert first_paint.main(["--repeats", "2", "--warmup", "0", "--home", str(home), "--importtime", "5",
                             "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["repeats"] == 2 and result["target_s"] == 1.5
    for name, window_class in (("studio", "QtMainWindow"), ("baseline", "QMainWindow"),
                               ("first_launch", "QtMainWindow")):
        summary = result[name]
        assert summary["window_class"] == window_class  # the real main window painted, not some other window
        assert len(summary["runs_s"]) == 2 and all(s > 0 for s in summary["runs_s"])
        assert summary["median_s"] == round(statistics.median(summary["runs_s"]), 4)
        assert summary["min_s"] <= summary["median_s"] <= summary["max_s"]
        phases = summary["median_phases_s"]
        assert phases["window_init"] <= phases["show"] <= phases["paint"] <= phases["frame"]
        assert isinstance(summary["heavy_imported"], list)
    assert result["ratio"] == round(result["studio"]["median_s"] / result["baseline"]["median_s"], 2)
    assert result["first_launch_ratio"] == round(result["first_launch"]["median_s"] / result["baseline"]["median_s"], 2)
    assert result["meets_target"] == (result["studio"]["median_s"] < 1.5)

    # The sys.modules check sees what the window needs (its plots) and nothing of the bare window ...
    assert "pyqtgraph" in result["studio"]["heavy_imported"]
    assert result["baseline"]["heavy_imported"] == []
    # ... and the training stack stays unimported until after the first paint.
    assert result["imported_before_paint_but_should_be_deferred"] == []
    assert result["heavy_imports_deferred"] is True

    slowest = result["slowest_imports_ms"]
    assert len(slowest) == 5 and all(row["cumulative_ms"] >= row["self_ms"] >= 0 for row in slowest)
    assert any(row["module"] == "studio.ui.main_window" for row in slowest)

    table = first_paint.markdown(result)
    assert "| bare QMainWindow + QLabel (baseline) |" in table
    assert "| Finetune Studio, demo already built |" in table and "first launch" in table
    assert f"**{result['ratio']:.2f}x**" in table


def test_ui_idle_replays_a_run_into_the_window_and_counts_what_it_does_idle(qapp, tmp_path):
    ui_idle = _load("ui_idle")
    assert ui_idle.parse_widths("1176-1178,1366") == [1176, 1177, 1178, 1366]
    events = ui_idle.demo_like_events(150)
    assert sum(e["event"] == "step" for e in events) == 150 and events[-1]["event"] == "finished"
    result = ui_idle.measure(events=events, widths=[1000], idle_s=0.3, workdir=tmp_path)
    (row,) = result["widths"]
    assert row["steps_plotted"] == 150 and row["width"] == 1000
    assert len(row["plot_view_widths"]) == 4 and row["cpu_s_per_s"] >= 0
    assert row["paints"] == 0, "an idle window paints nothing"
    assert result["widths_painting"] == 0 and "| 1000 |" in ui_idle.markdown(result)
