"""No leakage (issue 25): the held-out split is drawn from the originals by content hash before anything is
grown; no variant of a held-out conversation, and none of its identifiers, reaches training; a run that would
split grown rows by a fraction is refused, in preflight, in the trainer's split and in the Evaluate tab's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from studio.core.data.grow.build import grow
from studio.core.data.grow.recipe import Paraphrase, Recipe, save_recipe
from studio.core.data.grow.record import grow_recipe, split_refusal
from studio.core.data.split import content_hash, held_out_originals, held_out_split
from studio.core.metrics.text import chrf
from studio.core.metrics.tool_calls import extract_tool_calls

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def calls(text: str):
    return [(c.name, c.arguments) for c in extract_tool_calls(text)]


def nearest_neighbour_score(train: list[list[dict]], held: list[list[dict]]) -> int:
    """A model that only remembers: answers each held-out request with the reply of the most similar training
    request. It can get a call's arguments right only if a near-copy of the held-out row was trained on."""
    def user(m):
        return next(t["content"] for t in m if t["role"] == "user")

    right = 0
    for messages in held:
        best = max(train, key=lambda m: chrf(user(m), user(messages)).score)
        right += calls(best[-1]["content"]) == calls(messages[-1]["content"])
    return right


def paraphrased_recipe(rows: list[dict]) -> Recipe:
    """Every original with one reworded request kept, as the paraphrase loop stores them (same values)."""
    paraphrases = []
    for row in rows:
        user = row["messages"][1]["content"]
        paraphrases.append(Paraphrase(content_hash(row), 1, "Merhaba, bir isteğim var: " + user.lower()))
    return Recipe(source="calls.jsonl", seed=3, variants=2, held_out_fraction=0.25, paraphrases=paraphrases)


def test_a_leak_would_raise_the_score_and_the_record_leaves_none(tmp_path):
    rows = read(write_callcentre(tmp_path / "calls.jsonl", 24, seed=5))
    grown = grow(paraphrased_recipe(rows), rows)
    held_hashes = set(grown.held_out_hashes)
    assert len(grown.held_out) == 6 and all(r.original in held_hashes for r in grown.held_out)
    assert not any(r.original in held_hashes for r in grown.train)
    # The held-out conversations' identifiers appear in no training row.
    held_values = {str(s.value) for h in held_hashes for s in grown.slots[h].slots if s.kind != "name"}
    train_text = json.dumps([r.messages for r in grown.train], ensure_ascii=False)
    assert held_values and not any(value in train_text for value in held_values)

    # Today's rule on the grown file (a seeded fraction of its rows) evaluates on rows whose paraphrase or
    # original it trained on: the remembering model scores; on the recorded split it cannot.
    everything = [r.messages for r in grown.train] + [r.messages for r in grown.held_out]
    kept, held = held_out_split(len(everything), 0.25, 3)
    leaky = nearest_neighbour_score([everything[i] for i in kept], [everything[i] for i in held])
    honest = nearest_neighbour_score([r.messages for r in grown.train], [r.messages for r in grown.held_out])
    assert leaky >= 3 and honest == 0  # 4 of 20 right calls through the leak, 0 of 6 on the originals


def test_the_held_out_originals_do_not_depend_on_the_row_count_or_order():
    hashes = [f"{n:016x}" for n in range(40)]
    chosen = held_out_originals(hashes, 0.2, seed=0)
    assert len(chosen) == 8
    assert held_out_originals(list(reversed(hashes)) + hashes[:5], 0.2, seed=0) == chosen  # reordered, duplicated
    grown_by_ten = held_out_originals(hashes + [f"{n:016x}" for n in range(100, 110)], 0.2, seed=0)
    assert len(chosen & grown_by_ten) >= 6  # mostly the same conversations, never a function of the row numbers


def test_a_variant_never_takes_a_held_out_identifier():
    # Ten possible phones (one free digit): the held-out ones must never be drawn for a training variant.
    rows = [{"messages": [{"role": "user", "content": f"0532 123 45 6{d} hattımı kapatın."},
                          {"role": "assistant", "content": f'<tool_code>close_line({{"phone": "0532123456{d}"}})'
                                                           "</tool_code>"}]} for d in range(6)]
    recipe = Recipe(source="x", seed=1, variants=3, held_out_fraction=0.34, slots={"phone": "0532123456#"})
    grown = grow(recipe, rows)
    held = {json.dumps(r.messages)[-40:] for r in grown.held_out}
    held_phones = {r.messages[1]["content"].split('"phone": "')[1][:11] for r in grown.held_out}
    assert len(held_phones) == 2 and held
    for row in grown.train:
        assert not held_phones & {row.messages[1]["content"].split('"phone": "')[1][:11]}


def grown_config(tmp_path, demo_assets, *, eval_file: bool):
    from studio.core.config.settings import load_config

    write_callcentre(tmp_path / "calls.jsonl", 12, seed=1)
    (tmp_path / "calls.grow.toml").write_text('source = "calls.jsonl"\nvariants = 1\n', encoding="utf-8")
    _, outputs = grow_recipe(tmp_path / "calls.grow.toml")
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(outputs.train)
    config.data.eval_file = str(outputs.held_out) if eval_file else ""
    config.data.eval_fraction = 0.0 if eval_file else 0.2
    return config, outputs


def test_a_fraction_split_of_grown_rows_is_refused_before_the_run(tmp_path, demo_assets):
    from studio.core.data.issues import DataError
    from studio.core.train.preflight import check_run

    config, outputs = grown_config(tmp_path, demo_assets, eval_file=False)
    reason = split_refusal(config.data)
    assert reason and "calls.grown.jsonl" in reason and str(outputs.held_out) in reason
    with pytest.raises(DataError, match="variants of the rows it trains on"):
        check_run(config)
    config.data.eval_fraction, config.data.eval_auto = 0.0, True  # the automatic fraction, applied after this
    with pytest.raises(DataError, match="data.eval_auto"):
        check_run(config)
    config.data.eval_file = str(outputs.held_out)
    check_run(config)  # evaluated on the held-out originals: nothing leaks


def test_the_trainer_split_and_the_evaluate_tab_refuse_it_too(tmp_path, demo_assets):
    from studio.core.config.settings import save_config
    from studio.core.data.issues import DataError
    from studio.core.data.loading import training_data
    from studio.core.eval.cases import EvalSetError, held_out_set
    from studio.core.train.prepare import encode_splits, load_tokenizer

    config, _ = grown_config(tmp_path, demo_assets, eval_file=False)
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=False)
    with pytest.raises(DataError, match="set data.eval_file"):
        encode_splits(tokenizer, config, training_data(config.data), None)
    run = tmp_path / "old-run"
    run.mkdir()
    save_config(config, run / "run.toml")
    with pytest.raises(EvalSetError, match="held-out originals"):
        held_out_set(run)
