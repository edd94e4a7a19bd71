"""Which rows a run holds out for evaluation: one answer for training and for the Evaluate tab.

The held-out rows must be exactly the ones training never saw, so both sides ask this function rather than
re-creating the split. It is `datasets`' own seeded `train_test_split` taken on the row numbers: the permutation
depends only on the row count, the fraction and the seed, so selecting these rows from any dataset of that
length gives what `train_test_split` on it would.
"""

from __future__ import annotations


def held_out_split(rows: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, held-out rows) of `rows` rows, each in the order the split yields them."""
    import datasets

    if rows < 2 or fraction <= 0:
        return list(range(rows)), []
    split = datasets.Dataset.from_dict({"row": list(range(rows))}).train_test_split(test_size=fraction, seed=seed)
    return list(split["train"]["row"]), list(split["test"]["row"])


def content_hash(example: dict) -> str:
    """A conversation's identity by content (its turns, not its row number): the same in every file it is in."""
    import hashlib
    import json

    body = example.get("messages", example) if isinstance(example, dict) else example
    text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def held_out_originals(hashes: list[str], fraction: float, seed: int) -> set[str]:
    """The content hashes held out of `hashes`: ranked by a seeded hash of each, so the choice of one
    conversation does not depend on the row count, the order or the rows added later (what growing a dataset
    changes); identical conversations share a hash and fall on the same side."""
    import hashlib

    unique = sorted(set(hashes))
    if len(unique) < 2 or fraction <= 0:
        return set()
    count = min(len(unique) - 1, max(1, round(len(unique) * fraction)))
    ranked = sorted(unique, key=lambda h: hashlib.sha256(f"{seed}:{h}".encode()).hexdigest())
    return set(ranked[:count])
