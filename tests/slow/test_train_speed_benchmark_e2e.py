"""benchmarks/train_speed.py and its baseline script: the bookkeeping, and both really training."""

from __future__ import annotations


import pytest
from train_speed_benchmark_shared import BENCHMARKS, _load, train_speed  # noqa: F401  (shared with the other half)







def test_the_script_and_the_studio_train_the_same_steps_and_are_compared(train_speed, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    result = train_speed.measure(steps=8, repeats=1, workdir=tmp_path, variants=("studio", "script"))
    studio, script = result["samples"]["studio"][0], result["samples"]["script"][0]
    assert studio["steps"] == script["steps"] == 8
    for run in (studio, script):
        assert 0 < run["first_step_s"] < run["wall_s"]
        assert run["steps_per_s"] > 0
    assert result["steps_per_s_ratio"] == pytest.approx(studio["steps_per_s"] / script["steps_per_s"])
    assert result["first_step_gap_s"] == pytest.approx(studio["first_step_s"] - script["first_step_s"])
    assert (tmp_path / "script-0" / "adapter" / "adapter_config.json").is_file(), "the baseline saved its adapter"
    table = train_speed.markdown(result)
    assert "plain TRL script" in table and "steps/s ratio" in table
