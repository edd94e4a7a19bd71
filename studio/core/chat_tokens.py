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


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant reply."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise TemplateError(
                "the chat template renders earlier turns differently once later turns are added, so the "
                "assistant replies cannot be located; turn off 'train on responses only' for this model"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def encode_example(tokenizer: Any, example: dict[str, Any], *, train_on_responses_only: bool = True) -> dict[str, list[int]]:
    """`input_ids` and `labels` (IGNORE_INDEX where no loss is taken) for one normalised example."""
    if "text" in example:
        ids = tokenizer(example["text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids = ids + [tokenizer.eos_token_id]  # so the model also learns where a document ends
        return {"input_ids": ids, "labels": list(ids)}
    text, spans = assistant_char_spans(tokenizer, example["messages"])
    # The template already contains the special tokens (BOS, headers); adding them again would double BOS.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    if not train_on_responses_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = []
    for token_id, (start, end) in zip(ids, encoded["offset_mapping"]):
        inside = any(span_start <= start < span_end for span_start, span_end in spans) and end > start
        labels.append(token_id if inside else IGNORE_INDEX)
    return {"input_ids": ids, "labels": labels}


def trained_token_count(labels: list[int]) -> int:
    return sum(1 for label in labels if label != IGNORE_INDEX)
