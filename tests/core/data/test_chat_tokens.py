"""What the loss is computed on, checked with the demo's real tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.core.data.tokens import (
    FALLBACK_CHAT_TEMPLATE, IGNORE_INDEX, encode_example, ensure_chat_template, trained_token_count,
)
from studio.core.data.issues import DataError
from studio.core.data.table import LoadedData
from studio.core.train.run import tokenize_dataset

EOT = "<|eot_id|>"


@pytest.fixture(scope="module")
def tokenizer_dir(demo_assets) -> Path:
    return demo_assets.model_dir


@pytest.fixture
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def _trained_text(tokenizer, encoded) -> str:
    """The text of the tokens that carry a loss, in order."""
    assert len(encoded["input_ids"]) == len(encoded["labels"])
    ids = [token for token, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE_INDEX]
    for token, label in zip(encoded["input_ids"], encoded["labels"]):
        assert label in (IGNORE_INDEX, token), "a label differs from its input token"
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_only_the_assistant_reply_and_its_end_of_turn_are_trained(tokenizer):
    example = {"messages": [
        {"role": "user", "content": "Is there an outage in İzmir right now?"},
        {"role": "assistant", "content": 'Let me check. CALL check_outage(city="Izmir")'},
    ]}
    encoded = encode_example(tokenizer, example)

    assert _trained_text(tokenizer, encoded) == 'Let me check. CALL check_outage(city="Izmir")' + EOT
    # The whole conversation is still there as input, rendered by the model's own template.
    full = tokenizer.decode(encoded["input_ids"], skip_special_tokens=False)
    assert full == tokenizer.apply_chat_template(example["messages"], tokenize=False)
    assert full.count("<|begin_of_text|>") == 1


def test_every_demo_conversation_trains_exactly_its_answer(tokenizer, demo_assets):
    from studio.core.data.loading import load_training_data

    data = load_training_data(demo_assets.dataset_path)
    assert len(data.examples) == 10
    for example in data.examples:
        answer = example["messages"][-1]["content"]
        assert _trained_text(tokenizer, encode_example(tokenizer, example)) == answer + EOT


def test_multi_turn_trains_every_assistant_turn_and_no_prompt(tokenizer):
    example = {"messages": [
        {"role": "system", "content": "You are Nimbus support."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "What are your support hours?"},
        {"role": "assistant", "content": "Every day from 08:00 to 22:00."},
    ]}
    encoded = encode_example(tokenizer, example)
    trained = _trained_text(tokenizer, encoded)

    assert trained == "Hello, how can I help?" + EOT + "Every day from 08:00 to 22:00." + EOT
    for prompt in ("Nimbus support", "Hi there", "support hours", "user", "system"):
        assert prompt not in trained


def test_training_on_everything_when_responses_only_is_off(tokenizer):
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    encoded = encode_example(tokenizer, example, train_on_responses_only=False)
    assert encoded["labels"] == encoded["input_ids"]
    assert trained_token_count(encoded["labels"]) == len(encoded["input_ids"])


def test_plain_text_is_trained_whole_and_ends_with_the_end_token(tokenizer):
    encoded = encode_example(tokenizer, {"text": "Nimbus support is open every day."})
    ids = encoded["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert ids.count(tokenizer.eos_token_id) == 1
    assert encoded["labels"] == ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Nimbus support is open every day."


def test_a_dataset_with_nothing_to_train_on_is_refused(tokenizer, tmp_path):
    # load_data never yields a conversation without an assistant turn (it reports the row instead),
    # so this LoadedData is built by hand: it stands for any input whose labels all end up masked.
    path = tmp_path / "questions.jsonl"
    data = LoadedData(path=path, format="messages", evidence="by hand", lines=[1, 2], examples=[
        {"messages": [{"role": "user", "content": "What are your support hours?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    ])
    with pytest.raises(DataError) as info:
        tokenize_dataset(tokenizer, data, train_on_responses_only=True)
    assert str(path) in str(info.value)
    assert "no row has a token to train on" in str(info.value)

    # The same rows are fine when the prompts are trained too.
    rows = tokenize_dataset(tokenizer, data, train_on_responses_only=False)
    assert all(trained_token_count(row["labels"]) > 0 for row in rows)


def test_the_fallback_chat_template_is_installed_for_a_tokenizer_without_one(tokenizer):
    tokenizer.chat_template = None
    tokenizer.pad_token = None

    template = ensure_chat_template(tokenizer)

    assert template == FALLBACK_CHAT_TEMPLATE
    assert tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token  # batches can be padded
    example = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye!"},
    ]}
    encoded = encode_example(tokenizer, example)
    full = tokenizer.decode(encoded["input_ids"], skip_special_tokens=False)
    assert full.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert _trained_text(tokenizer, encoded) == "Hello!<|im_end|>\nGoodbye!<|im_end|>\n"


def test_an_existing_chat_template_is_kept(tokenizer):
    before = tokenizer.chat_template
    assert before and "<|start_header_id|>" in before
    assert ensure_chat_template(tokenizer) == before


@pytest.mark.parametrize("template, end", [
    (None, "<|eot_id|>"),  # the demo's Llama 3 template
    ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}", "<|im_end|>"),
], ids=["llama3", "chatml"])
def test_a_reply_ends_at_the_token_the_chat_template_closes_it_with(tokenizer, template, end):
    """Not only at the generation config's <eos>: a Gemma folder converted from GGUF names only <eos>, and its replies
    ran on past <end_of_turn> into a second copy of the call."""
    from studio.core.data.tokens import end_of_turn_ids

    if template is not None:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.chat_template = template
    assert end_of_turn_ids(tokenizer) == {tokenizer.convert_tokens_to_ids(end)}
