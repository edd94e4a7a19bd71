"""The training data exactly as the trainer receives it: read → normalise → encode → eval split.

`run_training` and the Dataset tab's preview share every step: the same reader and column mapping
(`dataset.load_with_settings`), the same tokenizer loading (`load_tokenizer`) and the same
`chat_tokens.encode_example`, so the highlighted tokens in the preview are the trained ones.
Encoding runs as a `datasets` map over the Arrow-backed examples, so a large dataset is never
held as Python lists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from studio.core.config.settings import ConfigError
from studio.core.data.issues import DataError
from studio.core.data.grow.record import split_refusal
from studio.core.data.split import held_out_split
from studio.core.data.table import LoadedData
from studio.core.data.tokens import IGNORE_INDEX, encode_examples, ensure_chat_template

ENCODING_VERSION = 1
"""Bump when encode_example's output changes, so cached encodings are not reused."""


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer with a chat template and a pad token, as training uses it. A tokenizer that needs
    the model's own code without `trust_remote_code` is refused by name (trained_base.RemoteCodeRefused)."""
    from studio.core.models.trained_base import load_trusted_tokenizer

    tokenizer = load_trusted_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    ensure_chat_template(tokenizer)
    return tokenizer


def nothing_to_train_error(path: Path | str) -> DataError:
    return DataError(
        f"{path}: no row has a token to train on (every label is masked). Check that the "
        "conversations contain assistant replies, or turn off 'train on responses only'."
    )




def _encode_batch(batch: dict[str, list], tokenizer: Any, train_on_responses_only: bool) -> dict[str, list]:
    examples = [{"text": text} if messages is None else {"messages": messages}
                for messages, text in zip(batch["messages"], batch["text"])]
    encoded = encode_examples(tokenizer, examples, train_on_responses_only=train_on_responses_only)
    return {"input_ids": [e["input_ids"] for e in encoded], "labels": [e["labels"] for e in encoded],
            "num_trained": [sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in encoded]}


def encode_dataset(tokenizer: Any, data: LoadedData, *, train_on_responses_only: bool) -> Any:
    """A `datasets.Dataset` of `input_ids` and `labels`, one row per example, from encode_example."""
    dataset = data.to_dataset()
    template = getattr(tokenizer, "chat_template", "") or ""
    fingerprint = hashlib.sha256("|".join(map(str, (
        ENCODING_VERSION, dataset._fingerprint, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
        template, train_on_responses_only))).encode()).hexdigest()[:32]
    encoded = dataset.map(
        _encode_batch,
        batched=True,
        batch_size=256,
        fn_kwargs={"tokenizer": tokenizer, "train_on_responses_only": train_on_responses_only},
        remove_columns=dataset.column_names,
        new_fingerprint=fingerprint,
    )
    if not any(count > 0 for count in encoded["num_trained"]):
        raise nothing_to_train_error(data.path)
    return encoded.remove_columns("num_trained")


def _check_something_survives_truncation(train_set: Any, max_length: int, path: Path | str) -> None:
    """Fail by name when max_length cuts every trained token (TRL would drop every row and crash)."""
    for batch in train_set.iter(batch_size=1000):
        if any(any(label != IGNORE_INDEX for label in labels[:max_length]) for labels in batch["labels"]):
            return
    raise ConfigError("training.max_length", max_length,
                      f"every example in {path} is cut before its first trained token; raise max length")


def encode_splits(tokenizer: Any, config: Any, train_data: LoadedData, eval_data: LoadedData | None,
                  ) -> tuple[Any, Any]:
    """(train_set, eval_set) for the trainer: the eval file's rows, or a seeded eval fraction, or none."""
    responses_only = config.data.train_on_responses_only
    train_set = encode_dataset(tokenizer, train_data, train_on_responses_only=responses_only)
    _check_something_survives_truncation(train_set, config.training.max_length, train_data.path)
    eval_set = None
    if eval_data is not None:
        eval_set = encode_dataset(tokenizer, eval_data, train_on_responses_only=responses_only)
    elif config.data.eval_fraction > 0:
        if (leak := split_refusal(config.data)) is not None:
            raise DataError(leak)
        if len(train_set) < 2:
            raise DataError(f"{train_data.path}: {len(train_set)} row(s) cannot be split for evaluation; "
                            "set data.eval_fraction = 0 or give an eval file")
        kept, held_out = held_out_split(len(train_set), config.data.eval_fraction, config.training.seed)
        train_set, eval_set = train_set.select(kept), train_set.select(held_out)
    max_length = config.training.max_length
    train_set = truncate_dataset(train_set, max_length)
    return train_set, None if eval_set is None else truncate_dataset(eval_set, max_length)


def _truncate_batch(batch: dict[str, list], max_length: int) -> dict[str, list]:
    from studio.core.data.preview import truncate  # the one rule, as the Dataset tab's preview shows it

    kept = [truncate({"input_ids": ids, "labels": labels}, max_length)
            for ids, labels in zip(batch["input_ids"], batch["labels"])]
    return {key: [row[key] for row in kept] for key in ("input_ids", "labels")}


def truncate_dataset(dataset: Any, max_length: int) -> Any:
    """Keep the first max_length tokens of each row, as TRL would, so that every path trains on the same tokens.

    Done here rather than left to TRL because TRL does not truncate padding-free batches (see fast_path).
    """
    if not any(len(ids) > max_length for batch in dataset.iter(batch_size=1000) for ids in batch["input_ids"]):
        return dataset
    return dataset.map(_truncate_batch, batched=True, batch_size=1000, fn_kwargs={"max_length": max_length},
                       desc=None)
