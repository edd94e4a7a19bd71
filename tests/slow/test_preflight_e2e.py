"""Issue 21, "one preflight for every refusal": bad input to `finetune-studio train` is exit 2 and one line naming
the file or key, with no traceback, before any run folder exists (items 14, 15, 16, 18)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio.core.config.settings import load_config, save_config
from preflight_shared import assert_refused_before_a_run_folder  # noqa: F401  (shared with the other half)




# ------------------------------------------------------------------------------------------------ item 14


def test_a_hub_id_that_is_not_cached_is_refused_when_the_hub_cannot_be_reached(tmp_path, demo_assets, run_studio):
    """Today: a run folder, `failed (crash)` and the Hub's connection traceback."""
    offline = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
               "HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: nothing answers, at once
    for env, why in ((offline, "no connection to http://127.0.0.1:9"),
                     ({**offline, "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set")):
        run = tmp_path / "run"
        result = run_studio("train", demo_assets.config_path, "--model", "someorg/not-downloaded",
                            "--output", run, env=env)
        line = assert_refused_before_a_run_folder(result, run)
        assert line == ("finetune-studio train: --model 'someorg/not-downloaded': not in the Hugging "
                        f"Face cache ({tmp_path / 'empty-cache'}) and the Hub cannot be reached ({why}); download it "
                        "first with `hf download someorg/not-downloaded` (or the Config tab's Download button) "
                        "where the Hub can be reached, or give a model folder")


# ------------------------------------------------------------------------------------------------ item 16


def _config_with(demo_assets, folder: Path, **changes) -> Path:
    """The demo config with `section.field` changes (set together, so validation sees them at once)."""
    config = load_config(demo_assets.config_path)
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        setattr(getattr(config, section), name, value)
    path = folder / "train.toml"
    save_config(config, path)
    return path


GRPO = {"training__method": "grpo", "grpo__num_generations": 2}


@pytest.mark.parametrize("case", ["reward pattern", "reward metric", "init adapter missing", "init adapter not a run",
                                  "bad rows"])
def test_what_only_the_training_child_found_is_refused_before_the_run_folder(case, tmp_path, demo_assets, run_studio,
                                                                              studio_home):
    """Today each of these is found by the training child, after the run folder exists: a `failed (config)` or
    `failed (data)` run in the history."""
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_bytes(Path(demo_assets.dataset_path).read_bytes() + b'{"messages": 5}\nnot json\n')
    changes, said = {
        "reward pattern": ({**GRPO, "grpo__rewards": ["regex=1.0"], "grpo__reward_pattern": "(unclosed"},
                           "grpo.reward_pattern = '(unclosed': "),
        "reward metric": ({**GRPO, "grpo__rewards": ["no_such_metric=1.0"]},
                          "grpo.rewards = ['no_such_metric=1.0']: unknown metric 'no_such_metric'"),
        "init adapter missing": ({"model__init_adapter": str(tmp_path / "gone")},
                                 f"model.init_adapter = '{tmp_path / 'gone'}': no such folder"),
        "init adapter not a run": ({"model__init_adapter": str(tmp_path)},
                                   f"model.init_adapter = '{tmp_path}': neither an adapter folder"),
        "bad rows": ({"data__train_file": str(bad_rows)},
                     f"{bad_rows}:11: 'messages' must be a list; 2 bad rows in all: fix or remove them, or add "
                     "--skip-bad-rows to train on the others"),
    }[case]
    config = _config_with(demo_assets, tmp_path, **changes)
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", config, "--output", run), run)
    assert said in line
    assert line.startswith("finetune-studio train: ")
    # Without --output the history stays empty too.
    line = assert_refused_before_a_run_folder(run_studio("train", config), run, studio_home)
    assert said in line


def test_an_init_adapter_of_another_quantisation_is_refused_before_the_run_folder(tmp_path, demo_assets, run_studio,
                                                                                 trained_run):
    config = _config_with(demo_assets, tmp_path, model__init_adapter=str(trained_run), quantization__mode="none")
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", config, "--output", run), run)
    assert f"model.init_adapter = '{trained_run}': its adapter was trained on the " in line


# ------------------------------------------------------------------------------------------------ item 18


def test_train_names_its_own_flags_for_bad_rows_and_the_encoding_and_they_work(tmp_path, demo_assets, run_studio):
    """Today the command line is told to "tick Skip bad rows" and to set data.encoding; `train` had neither flag."""
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_bytes(Path(demo_assets.dataset_path).read_bytes() + b'{"messages": 5}\n')
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(
        run_studio("train", demo_assets.config_path, "--data", bad_rows, "--output", run), run)
    assert "--skip-bad-rows" in line and "Skip bad rows" not in line

    turkish = tmp_path / "turkish.jsonl"
    turkish.write_bytes("\n".join(Path(demo_assets.dataset_path).read_text(encoding="utf-8").splitlines()[:9]
                                  + ['{"messages": [{"role": "user", "content": "Merhaba, şikayetim var"}, '
                                     '{"role": "assistant", "content": "Çok üzgünüz, hemen bakıyoruz"}]}'])
                        .encode("cp1254"))
    line = assert_refused_before_a_run_folder(
        run_studio("train", demo_assets.config_path, "--data", turkish, "--output", run), run)
    assert "(--encoding cp1254)" in line and "data.encoding" not in line

    trained = run_studio("train", demo_assets.config_path, "--data", turkish, "--encoding", "cp1254",
                         "--output", tmp_path / "turkish-run", "--max-steps", 1)
    assert trained.returncode == 0, trained.stderr[-3000:]
    trained = run_studio("train", demo_assets.config_path, "--data", bad_rows, "--skip-bad-rows",
                         "--output", tmp_path / "skipping-run", "--max-steps", 1)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (tmp_path / "skipping-run" / "train.log").read_text(encoding="utf-8")
    assert f"Skipping 1 bad row(s) of {bad_rows}" in log


# ------------------------------------------------------------------------------------------------ item 22


def test_data_inspect_reads_a_dpo_config_s_file_as_train_does(tmp_path, demo_assets, run_studio):
    """Today `data inspect --config dpo.toml` reads the pairs as SFT data: "format: not recognised, 0 usable, 40
    bad", suggesting a mapping that would train SFT on the chosen replies, while `train` reads 40 pairs."""
    import json

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Is the outage in district {i} over?", "chosen": f"Yes, since "
                                         f"{i} o'clock.", "rejected": "I don't know."}) + "\n" for i in range(40)),
                     encoding="utf-8")
    config = _config_with(demo_assets, tmp_path, training__method="dpo", data__train_file=str(pairs))

    result = run_studio("data", "inspect", pairs, "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "format:     preference — keys 'chosen' and 'rejected' (paired preference)" in result.stdout
    assert "rows:       40 usable, 0 bad" in result.stdout
    assert "suggested" not in result.stdout and "--columns" not in result.stdout
    report = json.loads(run_studio("data", "inspect", pairs, "--config", config, "--json").stdout)
    assert (report["method"], report["format"], report["rows"], report["bad_rows"]) == ("dpo", "preference", 40, 0)

    # One reader for both: a pair whose replies are the same is the same bad row to each.
    pairs.write_text(pairs.read_text(encoding="utf-8") + json.dumps({"prompt": "Hello?", "chosen": "Hi.",
                                                                     "rejected": "Hi."}) + "\n", encoding="utf-8")
    inspected = run_studio("data", "inspect", pairs, "--config", config)
    assert inspected.returncode == 2
    assert "rows:       40 usable, 1 bad" in inspected.stdout
    assert f"{pairs}: 1 bad row, the first at line 41" in inspected.stderr  # data inspect's own summary line
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", config, "--output", run), run)
    assert line.startswith(f"finetune-studio train: {pairs}:41: ")
    assert line.endswith("; 1 bad row for dpo in all: fix or remove it, or add --skip-bad-rows to train on the others")
