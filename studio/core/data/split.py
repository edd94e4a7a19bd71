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
