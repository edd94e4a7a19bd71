"""Evaluation (studio.core.eval) and `finetune-studio eval`: eval sets, the held-out split as training makes it,
batched greedy replies scored and streamed to results.jsonl, resume after a cancel or a kill, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.eval.cases import EvalSetError, cases_from_examples, held_out_set, load_eval_set
from studio.core.eval.results import summarise


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ eval sets


CONVERSATION = {"messages": [
    {"role": "system", "content": "Sen bir çağrı merkezi asistanısın."},
    {"role": "user", "content": "Faturamı öğrenmek istiyorum."},
    {"role": "assistant", "content": "Tabii, hattınızın numarası nedir?"},
    {"role": "user", "content": "05321234567"},
    {"role": "assistant", "content": '<tool_code>get_bill({"phone": "05321234567"})</tool_code>'},
]}


def test_every_assistant_turn_is_a_case_with_the_turns_before_it_as_prompt():
    first, second = cases_from_examples([CONVERSATION], [7])
    assert (first.id, second.id) == ("7.1", "7.2")
    assert [m["role"] for m in first.prompt] == ["system", "user"]
    assert first.expected == "Tabii, hattınızın numarası nedir?"
    assert [m["content"] for m in second.prompt][-1] == "05321234567" and len(second.prompt) == 4
    assert second.expected.startswith("<tool_code>get_bill") and second.question == "05321234567"
    [last] = cases_from_examples([CONVERSATION], [7], turns="last")
    assert last.id == "7.2" and last.key == second.key


def test_an_eval_set_without_assistant_turns_is_refused_by_name(tmp_path):
    path = _write_jsonl(tmp_path / "notes.jsonl", [{"text": "only text"}, {"text": "more text"}])
    with pytest.raises(EvalSetError, match=r"notes.jsonl: no assistant turns to evaluate"):
        load_eval_set(path)


def test_a_data_file_in_another_shape_reads_as_cases(tmp_path):
    path = _write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "2+2?", "output": "4"},
                                                    {"instruction": "3+3?", "output": "6"}])
    eval_set = load_eval_set(path)
    assert eval_set.name == "alpaca" and [c.expected for c in eval_set.cases] == ["4", "6"]
    assert [c.id for c in eval_set.cases] == ["1", "2"], "the source line names a case"


def test_the_held_out_split_is_the_one_training_held_out(demo_assets, tmp_path):
    """prepare.encode_splits' eval rows, encoded by training itself, are exactly the held-out cases."""
    from studio.core.config.settings import load_config, save_config
    from studio.core.data.tokens import encode_example
    from studio.core.train.prepare import encode_splits, load_tokenizer
    from studio.core.data.loading import training_data

    rows = [json.loads(line) for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    data_path = _write_jsonl(tmp_path / "data.jsonl", rows * 3)  # 30 rows: a 0.2 split holds out 6
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(data_path)
    config.data.eval_fraction = 0.2
    config.training.seed = 7
    run = tmp_path / "run"
    run.mkdir()
    save_config(config, run / "run.toml")

    tokenizer = load_tokenizer(config.model.name_or_path)
    _, trained_eval = encode_splits(tokenizer, config, training_data(config.data), None)
    eval_set = held_out_set(run)
    assert eval_set.name == "held-out" and len(eval_set.cases) == len(trained_eval) == 6
    ours = [encode_example(tokenizer, {"messages": c.messages() + [{"role": "assistant", "content": c.expected}]})
            ["input_ids"] for c in eval_set.cases]
    assert ours == list(trained_eval["input_ids"])
    assert "6 of 30 rows" in eval_set.source


def test_the_summary_counts_per_model_per_metric_and_weighs_the_loss_by_tokens():
    records = [
        {"model": "a", "case": "1", "loss": 1.0, "loss_tokens": 1, "truncated": True,
         "scores": {"exact": {"passed": True, "score": 1.0, "detail": {}}}},
        {"model": "a", "case": "2", "loss": 4.0, "loss_tokens": 3, "truncated": False,
         "scores": {"exact": {"passed": False, "score": 0.0, "detail": {}}}},
        {"model": "b", "case": "1", "loss": None, "loss_tokens": 0, "truncated": False,
         "scores": {"exact": {"passed": False, "score": 0.0, "detail": {}}}},
    ]
    summary = summarise(records, ["a", "b"], ["exact"])
    assert summary["a"]["metrics"]["exact"] == {"passed": 1, "total": 2, "mean_score": 0.5}
    assert summary["a"]["eval_loss"] == pytest.approx(13 / 4) and summary["a"]["truncated"] == 1
    assert summary["a"]["perplexity"] == pytest.approx(2.718281828 ** (13 / 4), rel=1e-4)
    assert summary["b"]["eval_loss"] is None and summary["b"]["done"] == 1
