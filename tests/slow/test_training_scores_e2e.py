"""Scores while training (training.score_examples) and the automatic held-out split of a small dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.config.settings import load_config, save_config
from studio.core.eval.cases import EvalCase
from studio.core.runs.store import RunDirectory
from studio.core.config.settings import AUTO_EVAL_MAX_ROWS, AUTO_EVAL_MIN_ROWS, RunConfig, held_out_count


# ------------------------------------------------------------------ scoring in a real run


def _scores(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "eval_scores"]


def _never_trained_on(config: RunConfig, cases: list[EvalCase]) -> None:
    """The scored cases are rows of the eval split and none of them is a row the trainer was given."""
    from studio.core.data.loading import training_data
    from studio.core.data.tokens import encode_example
    from studio.core.train.prepare import encode_splits, load_tokenizer

    data = training_data(config.data)
    tokenizer = load_tokenizer(config.model.name_or_path)
    train_set, eval_set = encode_splits(tokenizer, config, data, None)
    trained = {tuple(ids) for ids in train_set["input_ids"]}
    held_out = {tuple(ids) for ids in eval_set["input_ids"]}
    by_line = {int(line): example for line, example in zip(data.lines, data.examples)}
    for case in cases:
        ids = tuple(encode_example(tokenizer, by_line[case.line], train_on_responses_only=True)["input_ids"])
        assert ids in held_out and ids not in trained, case


def test_a_run_scores_its_held_out_examples_at_every_evaluation_and_resumes(demo_assets, tmp_path):
    from studio.core.data.loading import training_data
    from studio.core.train.run import run_training
    from studio.core.train.scores import held_out_cases

    config = load_config(demo_assets.config_path)
    config.data.eval_fraction = 0.3  # 3 of the 10 demo questions
    t = config.training
    t.max_steps, t.eval_strategy, t.eval_steps, t.save_steps = 4, "steps", 2, 2
    t.score_examples = 2
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    events: list[dict] = []

    assert run_training(config, run, events.append) == "completed"

    cases = held_out_cases(config, training_data(config.data), None)
    # "auto" scores by tool_call when a held-out reply makes a call (four of the demo's ten do), else normalised.
    metric = "tool_call" if any("<tool_code>" in case.expected for case in cases) else "normalised"
    scores = _scores(events)
    assert [s["step"] for s in scores] == [2, 4]
    for s in scores:
        assert s["metric"] == metric
        assert s["total"] == 2 and 0 <= s["passed"] <= 2 and 0.0 <= s["score"] <= 1.0
        assert 0 <= s["truncated"] <= 2
        # Scored after the evaluation of the same step, before the run goes on.
        eval_at = next(i for i, e in enumerate(events) if e["event"] == "eval" and e["step"] == s["step"])
        assert eval_at < events.index(s)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "completed"
    log = next(e["message"] for e in events if e["event"] == "log" and e["message"].startswith("Scoring"))
    assert log.startswith(f"Scoring 2 held-out example(s) by {metric} at every evaluation (2 steps)")

    assert len(cases) == 2
    _never_trained_on(config, cases)

    resumed: list[dict] = []
    t.max_steps = 6
    assert run_training(config, run, resumed.append, resume_from=run.checkpoints_dir / "checkpoint-2") == "completed"
    assert [s["step"] for s in _scores(resumed)] == [4, 6]
    assert all(s["total"] == 2 for s in _scores(resumed))
    assert resumed[-1]["event"] == "finished" and resumed[-1]["step"] == 6


def test_a_small_dataset_gets_its_automatic_split_recorded_and_scored_every_n_steps(demo_assets, tmp_path):
    """24 rows (the demo's ten questions, asked again with other words): 3 held out, recorded in run.toml, the
    Evaluate tab's held-out set is the same 3 rows, and scoring every step needs no evaluation schedule."""
    from studio.core.eval.cases import held_out_set
    from studio.core.train.run import run_training

    rows = [json.loads(line) for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    variants = []
    for n in range(24):
        record = json.loads(json.dumps(rows[n % len(rows)]))
        record["messages"][0]["content"] += " " + ["", "Please.", "Quickly."][n // len(rows)]
        variants.append(record)
    data = tmp_path / "calls.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in variants), encoding="utf-8")
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(data)
    assert config.data.eval_fraction == 0 and config.data.eval_auto
    t = config.training
    t.max_steps, t.eval_strategy, t.save_steps = 2, "no", 2
    t.score_examples, t.score_steps, t.score_metric = 5, 1, "exact"
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    events: list[dict] = []

    assert run_training(config, run, events.append) == "completed"

    assert any(e["event"] == "log" and e["message"].startswith("3 of 24 rows held out for eval") for e in events)
    recorded = load_config(run.config_path)
    assert recorded.data.eval_fraction == 0.1
    started = next(e for e in events if e["event"] == "started")
    assert started["num_train_rows"] == 21 and started["config_digest"] == recorded.digest()
    scores = _scores(events)
    assert [(s["step"], s["total"], s["metric"]) for s in scores] == [(1, 3, "exact"), (2, 3, "exact")]
    held_out = held_out_set(run.path)
    assert len(held_out.cases) == 3
    _never_trained_on(recorded, held_out.cases)


def test_scoring_counts_right_replies_and_gives_the_model_back_in_train_mode(trained_run, demo_assets):
    """The demo adapter answers its ten questions (issue 14's end-to-end check: at least 8/10 exact); scored by
    the training path, the counts must say so, and the model must be in train mode afterwards."""
    from studio.core.chat.model import ChatModel
    from studio.core.data.loading import training_data
    from studio.core.eval.cases import cases_from_examples
    from studio.core.metrics.registry import build_metric
    from studio.core.train.scores import reply_budget, score_model

    config = load_config(Path(trained_run) / "run.toml")
    cases = cases_from_examples(training_data(config.data).examples, turns="last")
    chat = ChatModel.load(trained_run)
    chat.model.train()
    budget = reply_budget(chat.tokenizer, cases)

    scores = score_model(chat.model, chat.tokenizer, cases, build_metric("exact"), max_new_tokens=budget,
                         batch_size=4)

    assert scores is not None and scores.total == 10 and scores.passed >= 8, scores
    assert scores.score == pytest.approx(scores.passed / 10)
    assert chat.model.training
    assert score_model(chat.model, chat.tokenizer, cases, build_metric("exact"), max_new_tokens=budget,
                       should_stop=lambda: True) is None
    assert chat.model.training


def test_the_held_out_count_is_the_one_the_split_holds_out():
    from studio.core.data.split import held_out_split

    for rows in range(AUTO_EVAL_MIN_ROWS, AUTO_EVAL_MAX_ROWS, 7):
        for fraction in (0.1, 0.05, 0.3):
            assert held_out_count(rows, fraction) == len(held_out_split(rows, fraction, 42)[1]), (rows, fraction)
