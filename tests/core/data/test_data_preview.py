"""The preview shows exactly what trains: same ids and labels as the trainer, token stats, `data inspect`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.data.tokens import IGNORE_INDEX, encode_example
from studio.core.train.prepare import encode_dataset, load_tokenizer
from studio.core.data.preview import preview_example
from studio.core.data.stats import measure_tokens
from studio.core.data.issues import DataError
from studio.core.data.table import LoadedData
from studio.core.data.loading import load_data

EOT = "<|eot_id|>"
MULTI_TURN = {"messages": [
    {"role": "system", "content": "You are Nimbus support."},
    {"role": "user", "content": "Is there an outage in İzmir?"},
    {"role": "assistant", "content": "No, the network in İzmir is fine."},
    {"role": "user", "content": "And in Ankara?"},
    {"role": "assistant", "content": "Ankara is fine too."},
]}


@pytest.fixture(scope="module")
def tokenizer(demo_assets):
    return load_tokenizer(str(demo_assets.model_dir))


def _trained_text(preview) -> str:
    return "".join(p.text for p in preview.pieces if p.trained and not p.truncated)


def test_the_preview_is_encode_example_token_for_token(tokenizer):
    preview = preview_example(tokenizer, MULTI_TURN)
    encoded = encode_example(tokenizer, MULTI_TURN)
    assert preview.input_ids == encoded["input_ids"] and preview.labels == encoded["labels"]
    assert [p.token_id for p in preview.pieces] == encoded["input_ids"]
    # The pieces spell the rendered conversation, chat template included.
    assert "".join(p.text for p in preview.pieces) == tokenizer.apply_chat_template(MULTI_TURN["messages"],
                                                                                      tokenize=False)
    assert _trained_text(preview) == f"No, the network in İzmir is fine.{EOT}Ankara is fine too.{EOT}"
    assert preview.trained_tokens == sum(label != IGNORE_INDEX for label in encoded["labels"])
    assert preview.pieces[0].special and preview.pieces[0].text == "<|begin_of_text|>"


def test_training_on_everything_trains_every_token(tokenizer):
    preview = preview_example(tokenizer, MULTI_TURN, train_on_responses_only=False)
    assert preview.trained_tokens == preview.total_tokens == len(preview.input_ids)
    assert all(p.trained for p in preview.pieces)


def test_max_length_cuts_like_the_trainer_and_the_cut_tokens_are_marked(tokenizer):
    full = preview_example(tokenizer, MULTI_TURN)
    cut = preview_example(tokenizer, MULTI_TURN, max_length=20)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    assert cut.truncated_tokens == full.total_tokens - 20
    assert [p.truncated for p in cut.pieces] == [i >= 20 for i in range(full.total_tokens)]
    assert cut.trained_tokens == 0  # the first reply starts after token 20: nothing of this row would train


def test_plain_text_preview(tokenizer):
    preview = preview_example(tokenizer, {"text": "Nimbus support is open."})
    assert preview.pieces[0].text == "<|begin_of_text|>" and preview.pieces[-1].token_id == tokenizer.eos_token_id
    assert "".join(p.text for p in preview.pieces[1:-1]) == "Nimbus support is open."
    assert preview.trained_tokens == preview.total_tokens


def test_token_stats_count_lengths_truncation_and_rows_that_teach_nothing(tokenizer, tmp_path):
    long_prompt = {"messages": [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"}]}
    rows = [MULTI_TURN, {"messages": MULTI_TURN["messages"][1:3]}, long_prompt]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    data = load_data(path)
    lengths = [len(encode_example(tokenizer, e)["input_ids"]) for e in data.examples]
    stats = measure_tokens(tokenizer, data, max_length=40)
    assert stats.complete and sorted(stats.lengths.tolist()) == sorted(lengths)
    assert stats.truncated_rows == sum(n > 40 for n in lengths)
    assert stats.untrained_rows == 1 and stats.untrained_lines == [3]  # the reply of line 3 lies past token 40
    assert stats.with_max_length(4096).untrained_rows == 0  # another max_length needs no re-encoding
    sample = measure_tokens(tokenizer, data, max_length=40, limit=2)
    assert not sample.complete and sample.measured == 2 and sample.estimate(1) == 2  # 1 of 2 sampled ≈ 2 of 3 → 2


def test_a_dataset_whose_labels_are_all_masked_is_refused_before_training(tokenizer, tmp_path):
    data = LoadedData(path=tmp_path / "q.jsonl", format="messages", evidence="by hand", lines=[1],
                      examples=[{"messages": [{"role": "user", "content": "Only a question"}]}])
    with pytest.raises(DataError, match="no row has a token to train on"):
        encode_dataset(tokenizer, data, train_on_responses_only=True)
    assert len(encode_dataset(tokenizer, data, train_on_responses_only=False)) == 1


def test_preview_pieces_render_multibyte_characters_once(tokenizer):
    preview = preview_example(tokenizer, {"messages": [{"role": "user", "content": "Şişli, İzmir, Beşiktaş"},
                                                       {"role": "assistant", "content": "Güneşli ve ılık."}]})
    assert "Şişli, İzmir, Beşiktaş" in "".join(p.text for p in preview.pieces)
    assert _trained_text(preview) == f"Güneşli ve ılık.{EOT}"


def test_loaded_rows_keep_their_source_lines(tmp_path):
    path = Path(tmp_path / "gaps.jsonl")
    path.write_text('\n{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    data = load_data(path)
    assert data.lines == [2, 4] and len(data.examples) == 2
