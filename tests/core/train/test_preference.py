"""Training methods beyond SFT: DPO, ORPO, KTO and GRPO on the demo model, and the data they read."""

from __future__ import annotations


import pytest

from studio.core.config.settings import ConfigError
from studio.core.data.issues import DataError
from studio.core.data.normalise import normalise_preference
from studio.core.methods.registry import method as method_spec
from studio.core.methods.reading import load_preference_data, require_preference_trainable
from preference_shared import _config, _write_jsonl  # noqa: F401  (shared with the other half)






# ------------------------------------------------------------------ shapes and validation (no model)


def test_each_method_reads_its_shape_conversational_or_plain():
    plain = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    assert method_spec("dpo").data.detect(plain)[0] == "preference"
    assert normalise_preference(plain, "preference") == [{
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}]}]
    # TRL's implicit prompt: two whole conversations whose shared first turns are the prompt.
    implicit = {"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
                "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}
    (pair,) = normalise_preference(implicit, method_spec("orpo").data.detect(implicit)[0])
    assert pair["prompt"] == [{"role": "user", "content": "Hi?"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "No."}]

    unpaired = {"prompt": "Hi?", "completion": "Hello.", "label": "false"}
    assert method_spec("kto").data.detect(unpaired)[0] == "unpaired_preference"
    assert normalise_preference(unpaired, "unpaired_preference")[0]["label"] is False

    chat = {"messages": [{"role": "user", "content": "Outage?"}, {"role": "assistant", "content": "CALL x()"}]}
    fmt, why = method_spec("grpo").data.detect(chat)
    assert fmt == "messages" and "expected" in why
    assert normalise_preference(chat, fmt) == [{"prompt": [{"role": "user", "content": "Outage?"}],
                                                "expected": "CALL x()"}]
    with pytest.raises(ValueError, match="needs 'chosen' and 'rejected'"):
        method_spec("dpo").data.detect({"prompt": "a", "completion": "b"})


def test_identical_pairs_and_bad_labels_are_reported_by_line(tmp_path):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."},
        {"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."},
        {"prompt": "Hi?", "chosen": "Hello."},
    ])
    data = load_preference_data(path, "dpo")
    assert len(data.examples) == 1
    assert [str(i) for i in data.issues] == [
        f"{path}:2: 'chosen' and 'rejected' are identical: there is nothing to prefer",
        f"{path}:3: dpo trains on pairs: needs 'chosen' and 'rejected' (and 'prompt', unless both are whole "
        "conversations) (keys: chosen, prompt)"]
    with pytest.raises(DataError, match="2 bad row"):
        require_preference_trainable(data, skip_bad_rows=False)
    assert require_preference_trainable(data, skip_bad_rows=True) is data

    labels = _write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "Hi?", "completion": "Hello.", "label": 1},
                                                   {"prompt": "Yo?", "completion": "Hey.", "label": "maybe"}])
    data = load_preference_data(labels, "kto")
    assert [str(i) for i in data.issues] == [f"{labels}:2: 'label' must be true or false (or 1/0), got 'maybe'"]
    with pytest.raises(DataError, match="labelled desirable .true.; kto .* needs both"):
        require_preference_trainable(data, skip_bad_rows=True)


def test_kto_splits_pairs_and_the_column_mapping_applies(tmp_path):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"question": "Hi?", "good": "Hello.", "bad": "Go away."}])
    data = load_preference_data(path, "kto", mapping=["prompt=question", "chosen=good", "rejected=bad"])
    assert [(e["completion"][0]["content"], e["label"]) for e in data.examples] == [("Hello.", True),
                                                                                    ("Go away.", False)]
    assert data.lines == [1, 1]
    assert "split into a desirable and an undesirable reply" in data.evidence


def test_grpo_needs_a_batch_that_holds_whole_groups(demo_assets, tmp_path):
    config = _config(demo_assets, "grpo", tmp_path / "x.jsonl", num_generations=3)
    with pytest.raises(ConfigError, match="grpo.num_generations.*multiple"):
        config.validate()
