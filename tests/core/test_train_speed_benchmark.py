"""benchmarks/train_speed.py and its baseline script: the bookkeeping, and both really training."""

from __future__ import annotations


import pytest
from train_speed_benchmark_shared import BENCHMARKS, _load, train_speed  # noqa: F401  (shared with the other half)







def test_steps_per_second_skips_the_warm_up_and_first_step_counts_from_the_start(train_speed):
    started = 100.0
    # Step 1 ends 6 s after the start; warm-up steps are slow; from step 6 on, 4 steps per second.
    steps = [(1, 106.0), (2, 107.0), (3, 108.0), (4, 109.0), (5, 110.0), (6, 111.0), (7, 111.25), (8, 111.5),
             (9, 111.75), (10, 112.0)]
    summary = train_speed.summarise(steps, started, wall=13.0)
    assert summary["first_step_s"] == pytest.approx(6.0)
    assert summary["steps_per_s"] == pytest.approx(4.0)
    assert summary["steps"] == 10 and summary["wall_s"] == 13.0
    with pytest.raises(ValueError, match="no optimiser step"):
        train_speed.summarise([], started, wall=1.0)


def test_the_baseline_trains_on_the_replies_only_like_the_studio(tmp_path):
    plain = _load("plain_trl_sft")
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}]}
    pair = plain.to_prompt_completion(row)
    assert pair["prompt"] == row["messages"][:2] and pair["completion"] == row["messages"][2:]
