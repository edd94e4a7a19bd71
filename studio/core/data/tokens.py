"""Turning a normalised example into token ids and loss labels, exactly as the trainer sees them.

One function, `encode_example`, serves the trainer and the Dataset tab's preview, so what the user
sees highlighted is what trains. Assistant spans are found by rendering the conversation's prefixes
with the model's own chat template and locating them by character offset, which works for any
template (no `{% generation %}` markers needed) and keeps the closing end-of-turn token trained, so
the model learns to stop exactly where the template says a turn ends.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100

# Used only when a tokenizer ships without a chat template (many base models): ChatML, which is
# what most instruction tunes use. The template a run used is saved with its adapter.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    """The chat template cannot be used to locate the assistant's replies."""


def ensure_chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template, installing the fallback when it has none."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.chat_template


def render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """The special token the chat template closes an assistant reply with (<|eot_id|>, <|im_end|>, Gemma's
    <end_of_turn>, Mistral's </s>), found by rendering a reply and reading the first special token after it.

    A reply must stop there even where the model's generation config names only <eos> (a Gemma folder converted from
    GGUF does): training teaches the model to write this token, not <eos>."""
    marker = "\u2063R\u2063"
    try:
        text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker},
                                  {"role": "user", "content": "ok"}])
    except Exception:  # a template that refuses this conversation: no end of turn to add
        return set()
    after = text.split(marker, 1)[1] if marker in text else ""
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    found = [(after.find(token), token) for token in specials if token and token in after]
    if not found:
        return set()
    first = min(found)[1]
    token_id = tokenizer.convert_tokens_to_ids(first)
    return {int(token_id)} if isinstance(token_id, int) and token_id >= 0 else set()


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant reply."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = full if i == len(messages) - 1 else render(tokenizer, messages[: i + 1])
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise TemplateError(
                "the chat template renders earlier turns differently once later turns are added, so the "
                "assistant replies cannot be located; turn off 'train on responses only' for this model"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def encode_example(tokenizer: Any, example: dict[str, Any], *, train_on_responses_only: bool = True) -> dict[str, list[int]]:
    """`input_ids` and `labels` (IGNORE_INDEX where no loss is taken) for one normalised example."""
    return encode_examples(tokenizer, [example], train_on_responses_only=train_on_responses_only)[0]


def encode_examples(tokenizer: Any, examples: list[dict[str, Any]], *,
                    train_on_responses_only: bool = True) -> list[dict[str, list[int]]]:
    """encode_example for a batch: the same ids and labels, with one (parallel) tokenizer call per kind of row."""
    results: list[dict[str, list[int]]] = [{} for _ in examples]
    chats = [(i, *assistant_char_spans(tokenizer, example["messages"]))
             for i, example in enumerate(examples) if "text" not in example]
    if chats:
        # The template already contains the special tokens (BOS, headers); adding them again would double BOS.
        encoded = tokenizer([text for _, text, _ in chats], add_special_tokens=False, return_offsets_mapping=True)
        for (i, _, spans), ids, offsets in zip(chats, encoded["input_ids"], encoded["offset_mapping"]):
            labels = _response_labels(ids, offsets, spans) if train_on_responses_only else list(ids)
            results[i] = {"input_ids": ids, "labels": labels}
    texts = [(i, example["text"]) for i, example in enumerate(examples) if "text" in example]
    if texts:
        encoded = tokenizer([text for _, text in texts], add_special_tokens=True)
        for (i, _), ids in zip(texts, encoded["input_ids"]):
            if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
                ids = ids + [tokenizer.eos_token_id]  # so the model also learns where a document ends
            results[i] = {"input_ids": ids, "labels": list(ids)}
    return results


def _response_labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Each token's id where it starts inside an assistant span, else IGNORE_INDEX (spans are in order)."""
    labels = []
    span = 0
    for token_id, (start, end) in zip(ids, offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        inside = span < len(spans) and spans[span][0] <= start and end > start
        labels.append(token_id if inside else IGNORE_INDEX)
    return labels


def trained_token_count(labels: list[int]) -> int:
    return sum(1 for label in labels if label != IGNORE_INDEX)
