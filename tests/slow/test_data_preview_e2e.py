"""The preview shows exactly what trains: same ids and labels as the trainer, token stats, `data inspect`."""

from __future__ import annotations


import pytest

from studio.core.data.tokens import IGNORE_INDEX
from studio.core.train.prepare import load_tokenizer
from studio.core.data.preview import preview_example
from studio.core.data.issues import DataError
from studio.core.data.loading import load_with_settings


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
