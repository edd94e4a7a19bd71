"""The preview shows exactly what trains: same ids and labels as the trainer, token stats, `data inspect`."""

from __future__ import annotations

import json

import pytest

from studio.core.data.issues import DataError
from studio.core.data.loading import load_with_settings
from studio.core.data.preview import preview_example
from studio.core.data.tokens import IGNORE_INDEX
from studio.core.train.prepare import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(demo_assets):
    return load_tokenizer(str(demo_assets.model_dir))


def _capture_trainer_inputs(monkeypatch, config, tmp_path) -> dict:
    """Run run_training up to trainer.train() and keep what the SFTTrainer would train on."""
    import trl

    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    captured: dict = {}

    def fake_train(self, *args, **kwargs):
        captured["train"] = self.train_dataset
        captured["eval"] = self.eval_dataset
        captured["batch"] = self.data_collator([self.train_dataset[i] for i in range(len(self.train_dataset))])

    monkeypatch.setattr(trl.SFTTrainer, "train", fake_train)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.path.mkdir(parents=True)
    captured["events"] = []
    run_training(config, run_dir, captured["events"].append)
    return captured


def test_the_preview_equals_what_the_trainer_receives(demo_assets, tokenizer, tmp_path, monkeypatch):
    """A CSV with its own column names, a bad row (skipped), a multi-turn row cut by max_length: the trainer's
    prepared dataset and its collated batch hold the preview's ids and labels, row for row."""
    import csv

    from studio.core.config.settings import load_config

    path = tmp_path / "support.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["persona", "question", "answer"])
        writer.writerow(["", "What are your support hours?", "Every day from 08:00 to 22:00."])
        writer.writerow(["Be brief.", "Is there an outage in İzmir?", "No outage in İzmir."])
        writer.writerow(["", "", "an empty question is a bad row"])
        writer.writerow(["", "Please tell me everything " * 12, "Here is everything you asked about."])
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(path)
    config.data.column_mapping = ["prompt=question", "completion=answer", "system=persona"]
    config.data.skip_bad_rows = True
    config.training.max_length = 48
    config.validate()

    captured = _capture_trainer_inputs(monkeypatch, config, tmp_path)
    data = load_with_settings(config.data)
    previews = [preview_example(tokenizer, example, train_on_responses_only=True, max_length=48)
                for example in data.examples]
    trainable = [p for p in previews if p.trained_tokens]  # TRL drops rows that truncation leaves untrained
    assert len(previews) == 3 and len(trainable) == 2
    assert [row["input_ids"] for row in captured["train"]] == [p.input_ids for p in trainable]
    assert [row["labels"] for row in captured["train"]] == [p.labels for p in trainable]
    batch = captured["batch"]
    for i, preview in enumerate(trainable):
        n = len(preview.input_ids)
        assert batch["input_ids"][i, :n].tolist() == preview.input_ids
        assert batch["labels"][i, :n].tolist() == preview.labels
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
    assert f"{path}:4: 'question' is empty" in "\n".join(e.get("message", "") for e in captured["events"])


def test_training_refuses_bad_rows_unless_told_to_skip_and_splits_eval_by_seed(demo_assets, tmp_path, monkeypatch):
    from studio.core.config.settings import load_config

    path = tmp_path / "data.jsonl"
    lines = demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines + ['{"messages": []}']) + "\n", encoding="utf-8")
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(path)
    with pytest.raises(DataError) as info:
        _capture_trainer_inputs(monkeypatch, config, tmp_path / "refused")
    assert f"{path}:11: 'messages' is empty" in str(info.value)

    config.data.skip_bad_rows = True
    config.data.eval_fraction = 0.2
    first = _capture_trainer_inputs(monkeypatch, config, tmp_path / "a")
    second = _capture_trainer_inputs(monkeypatch, config, tmp_path / "b")
    assert len(first["train"]) == 8 and len(first["eval"]) == 2
    assert first["eval"]["input_ids"] == second["eval"]["input_ids"]  # seeded: the same rows every run


def test_data_inspect_reports_format_counts_and_token_stats(run_studio, demo_assets):
    result = run_studio("data", "inspect", demo_assets.dataset_path, "--model", demo_assets.model_dir)
    assert result.returncode == 0, result.stderr
    assert "format:     messages" in result.stdout and "10 usable, 0 bad" in result.stdout
    assert "tokens:     min" in result.stdout

    result = run_studio("data", "inspect", demo_assets.dataset_path, "--model", demo_assets.model_dir, "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["ok"] and report["format"] == "messages" and report["rows"] == 10
    assert report["tokens"]["rows_measured"] == 10 and report["tokens"]["truncated_rows"] == 0


def test_data_inspect_exits_2_naming_file_and_line(run_studio, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n{"prompt": 1, "completion": "b"}\n',
                    encoding="utf-8")
    result = run_studio("data", "inspect", path, "--json")
    assert result.returncode == 2
    # One line on stderr, naming the file and the first bad line; the document on stdout lists each error once.
    assert result.stderr == f"finetune-studio data inspect: {path}: 2 bad rows, the first at line 2 (listed in " \
                            "the JSON document)\n"
    report = json.loads(result.stdout)  # still one JSON document
    assert not report["ok"] and [e["line"] for e in report["errors"]] == [2, 3]
    plain = run_studio("data", "inspect", path)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "the first at line 2 (listed above)" in plain.stderr
    for error in (f"{path}:2: malformed JSON", f"{path}:3: 'prompt' must be a string"):
        assert (plain.stdout + plain.stderr).count(error) == 1, error

    turkish = tmp_path / "tr.csv"
    turkish.write_bytes("prompt,completion\nİzmir?,Güneşli.\n".encode("cp1254"))
    result = run_studio("data", "inspect", turkish)
    assert result.returncode == 2 and f"{turkish}:2: not UTF-8" in result.stderr and "cp1254" in result.stderr
    assert run_studio("data", "inspect", turkish, "--encoding", "cp1254").returncode == 0
    assert run_studio("data", "inspect", tmp_path / "missing.jsonl").returncode == 2
