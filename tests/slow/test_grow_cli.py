"""`finetune-studio data grow RECIPE.toml` → `train` → `eval` on CPU (issue 25): the same rows again with the same
seed, the record in the run folder, the eval on the held-out originals only; never over a user's file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402


def test_data_grow_then_train_then_eval(tmp_path, demo_assets, run_studio):
    from studio.core.config.settings import load_config, save_config

    write_callcentre(tmp_path / "calls.jsonl", 12, seed=2)
    recipe = tmp_path / "calls.grow.toml"
    recipe.write_text('source = "calls.jsonl"\nseed = 4\nvariants = 2\nheld_out_fraction = 0.25\n', encoding="utf-8")
    grown = run_studio("data", "grow", recipe)
    assert grown.returncode == 0, grown.stderr
    train_file, held_file = tmp_path / "calls.grown.jsonl", tmp_path / "calls.held-out.jsonl"
    first = train_file.read_bytes()
    rows = [json.loads(line) for line in first.decode().splitlines()]
    originals = [r for r in rows if r["grown"]["variant"] == "original"]
    assert len(originals) == 9
    # Two variants of each original (a city slot has fewer when its pool of other cities runs out).
    assert 2 * 6 <= len(rows) - len(originals) <= 2 * 9
    assert f'data.eval_file = "{held_file}"' in grown.stdout
    assert all(r["grown"]["variant"] == "held-out" for r in map(json.loads, held_file.read_text().splitlines()))

    again = run_studio("data", "grow", recipe)  # an earlier grow's files are replaced by the same rows
    assert again.returncode == 0, again.stderr
    assert train_file.read_bytes() == first

    config = load_config(demo_assets.config_path)
    config.data.train_file, config.data.eval_file, config.data.eval_fraction = str(train_file), str(held_file), 0.0
    config.training.max_steps = 8
    save_config(config, tmp_path / "grown.toml")
    run = tmp_path / "run"
    trained = run_studio("train", tmp_path / "grown.toml", "--output", run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = (run / "grow.toml").read_text(encoding="utf-8")
    assert "[held_out]" in record and 'recipe = "calls.grow.toml"' in record

    evaluated = run_studio("eval", run, "--metric", "tool_call", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads(evaluated.stdout)
    results = (run / "evals" / "held-out" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(results) == 3  # the three held-out originals, nothing grown
    assert "held-out" in json.dumps(summary)


def test_data_grow_never_writes_over_a_users_file(tmp_path, run_studio):
    write_callcentre(tmp_path / "calls.jsonl", 6, seed=2)
    (tmp_path / "calls.grown.jsonl").write_text('{"messages": []}\n', encoding="utf-8")  # the user's own file
    recipe = tmp_path / "calls.grow.toml"
    recipe.write_text('source = "calls.jsonl"\n', encoding="utf-8")
    done = run_studio("data", "grow", recipe)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("calls.grown.jsonl: exists and was not written by a grow; move it or name "
                                        "the recipe otherwise")
    assert (tmp_path / "calls.grown.jsonl").read_text() == '{"messages": []}\n'


def test_a_bad_recipe_key_is_one_line_naming_file_and_key(tmp_path, run_studio):
    recipe = tmp_path / "bad.grow.toml"
    recipe.write_text('source = "calls.jsonl"\nvariants = "many"\n', encoding="utf-8")
    done = run_studio("data", "grow", recipe)
    assert done.returncode == 2 and f"{recipe}: variants: 'many' is not a number" in done.stderr
