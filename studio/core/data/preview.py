"""One example exactly as the model will see it: the chat template applied, token by token.

`preview_example` runs `chat_tokens.encode_example` — the function the trainer's data goes through —
and then truncates to `max_length` the way TRL's SFTTrainer does (keep the start), so
`ExamplePreview.input_ids`/`labels` are what the trainer receives for that row. Each token also
carries the text it covers, for the Dataset tab's token view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.core.data.tokens import IGNORE_INDEX, assistant_char_spans, encode_example


@dataclass(frozen=True)


class TokenPiece:
    """One token of a preview: its id, the text it covers and whether the loss is taken on it."""

    index: int
    token_id: int
    text: str
    trained: bool
    truncated: bool
    special: bool


@dataclass
class ExamplePreview:
    """A row after the chat template and tokenisation; ids/labels are cut at max_length as in training."""

    input_ids: list[int]
    labels: list[int]
    pieces: list[TokenPiece] = field(default_factory=list)
    total_tokens: int = 0
    trained_tokens: int = 0
    truncated_tokens: int = 0
    rendered: str = ""

    @property
    def masked_tokens(self) -> int:
        return len(self.input_ids) - self.trained_tokens


def truncate(encoded: dict[str, list[int]], max_length: int | None) -> dict[str, list[int]]:
    """Keep the first max_length tokens (TRL's truncation_mode='keep_start')."""
    if max_length is None or len(encoded["input_ids"]) <= max_length:
        return encoded
    return {"input_ids": encoded["input_ids"][:max_length], "labels": encoded["labels"][:max_length]}


def preview_example(tokenizer: Any, example: dict[str, Any], *, train_on_responses_only: bool = True,
                    max_length: int | None = None) -> ExamplePreview:
    """Token ids, labels and per-token text of one normalised example."""
    encoded = encode_example(tokenizer, example, train_on_responses_only=train_on_responses_only)
    ids, labels = encoded["input_ids"], encoded["labels"]
    kept = truncate(encoded, max_length)
    texts, rendered = _token_texts(tokenizer, example, ids)
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    cut = len(kept["input_ids"])
    pieces = [TokenPiece(i, token_id, texts[i], labels[i] != IGNORE_INDEX, i >= cut, token_id in special_ids)
              for i, token_id in enumerate(ids)]
    return ExamplePreview(
        input_ids=kept["input_ids"], labels=kept["labels"], pieces=pieces, total_tokens=len(ids),
        trained_tokens=sum(1 for label in kept["labels"] if label != IGNORE_INDEX),
        truncated_tokens=len(ids) - cut, rendered=rendered,
    )


def _token_texts(tokenizer: Any, example: dict[str, Any], ids: list[int]) -> tuple[list[str], str]:
    """The slice of the rendered text each token covers ('' for the later pieces of a split character)."""
    if "text" in example:
        rendered = example["text"]
        encoded = tokenizer(rendered, add_special_tokens=True, return_offsets_mapping=True)
    else:
        rendered, _ = assistant_char_spans(tokenizer, example["messages"])
        encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    offsets = list(encoded["offset_mapping"])
    if list(encoded["input_ids"]) != ids[: len(offsets)]:
        return [tokenizer.decode([token_id]) for token_id in ids], rendered
    texts, covered = [], 0
    for token_id, (start, end) in zip(ids, offsets):
        if end <= start:  # added tokens such as BOS carry no offsets
            texts.append(tokenizer.convert_ids_to_tokens(token_id))
            continue
        texts.append(rendered[max(start, covered):end])
        covered = max(covered, end)
    for token_id in ids[len(offsets):]:  # the end-of-text token encode_example appends to plain text
        texts.append(tokenizer.convert_ids_to_tokens(token_id))
    return texts, rendered
