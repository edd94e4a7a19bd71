"""benchmarks/gpu_speed.py without a GPU: its arithmetic by hand, and its whole pipeline on the CPU (--cpu-smoke)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
from gpu_speed_benchmark_shared import DEMO, SCRIPT, bench  # noqa: F401  (shared with the other half)







def test_cpu_smoke_runs_both_paths_end_to_end(tmp_path, bench):
    out = tmp_path / "smoke.json"
    profiles = tmp_path / "profiles"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--work-dir", str(tmp_path / "work"),
                           "--output", str(out), "--profile", str(profiles)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    trained = {r["path"]: r for r in report["rows"] if not r["cap_bytes"]}
    assert set(trained) == {"plain", "studio"}
    seq, warmup, steps = report["settings"]["seq"], report["settings"]["warmup"], report["settings"]["steps"]
    for path, row in trained.items():
        assert row["status"] == "ok", (path, row.get("error"))
        assert row["steps_completed"] == warmup + steps
        assert row["step_tokens"] == [seq] * (warmup + steps)  # every row is seq tokens, no padding
        assert row["tokens_per_second"] > 0
        rates = [t / s for t, s in zip(row["step_tokens"][warmup:], row["step_seconds"][warmup:])]
        assert row["tokens_per_second"] == pytest.approx(statistics.median(rates), rel=1e-3)
        assert row["flops_per_token"] == bench.model_flops_per_token(DEMO, seq)
        assert row["mfu"] is None  # no GPU, no peak: omitted, not invented
        assert len(row["losses"]) >= warmup + steps and all(loss > 0 for loss in row["losses"])
    assert "Fast path on" in trained["studio"]["fast_path"]
    assert trained["plain"]["tokens_digest"] == trained["studio"]["tokens_digest"]
    [c] = report["comparisons"]
    plain, studio = trained["plain"]["tokens_per_second"], trained["studio"]["tokens_per_second"]
    assert c["speedup"] == round(studio / plain, 3)
    assert c["same_tokens"] is True
    # The same rows and settings: the two paths' mean losses agree (the order of the rows may differ).
    assert c["mean_loss_studio"] == pytest.approx(c["mean_loss_plain"], rel=0.02)
    assert c["vram_ratio"] is None  # the CPU has no VRAM to compare
    assert all(r["status"] == "skipped" for r in report["rows"] if r["cap_bytes"])
    assert report["machine"]["versions"]["trl"] and report["machine"]["gpu"] is None
    assert report["command"].startswith("python benchmarks/gpu_speed.py --cpu-smoke")
    assert f"| demo | {plain:,.0f} | {studio:,.0f} | {c['speedup']:.2f}×" in done.stdout
    assert "| demo | studio | 8 | skipped |" in done.stdout
    for path in ("plain", "studio"):  # --profile: each case's profiled steps, summary first, then operator tables
        text = (profiles / f"demo-{path}-seq{seq}-b1.txt").read_text()
        summary = json.loads(text.splitlines()[0])
        assert summary["steps"] == bench.PROFILE_STEPS and summary["host_busy_seconds"] > 0
        assert "aten::" in text
