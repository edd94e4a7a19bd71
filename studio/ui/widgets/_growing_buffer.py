"""Append-only numpy columns for live plots.

Appending to a Python list and converting on every redraw is O(n) per frame;
preallocating and doubling keeps appends amortised O(1) and lets the plot
take zero-copy slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class GrowingBuffer:
    """``columns`` parallel float64 arrays that double in capacity when full."""

    def __init__(self, columns: int, capacity: int = 1024) -> None:
        if columns < 1 or capacity < 1:
            raise ValueError("columns and capacity must be positive")
        self._data = np.full((columns, capacity), np.nan)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        """Rows that fit before the next reallocation."""
        return self._data.shape[1]

    def append(self, *values: float) -> None:
        """Append one row; pass one value per column."""
        if len(values) != self._data.shape[0]:
            raise ValueError(f"expected {self._data.shape[0]} values, got {len(values)}")
        if self._size == self.capacity:
            self._reserve(self.capacity * 2)
        self._data[:, self._size] = values
        self._size += 1

    def replace(self, columns: Sequence[np.ndarray | Sequence[float]]) -> None:
        """Replace the contents with whole columns (bulk load)."""
        arrays = [np.asarray(c, dtype=float).ravel() for c in columns]
        if len(arrays) != self._data.shape[0]:
            raise ValueError(f"expected {self._data.shape[0]} columns, got {len(arrays)}")
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError("columns must have the same length")
        self._size = 0
        if n > self.capacity:
            self._reserve(max(n, self.capacity * 2))
        for i, a in enumerate(arrays):
            self._data[i, :n] = a
        self._size = n

    def clear(self) -> None:
        """Forget every row but keep the allocation."""
        self._size = 0

    def column(self, index: int) -> np.ndarray:
        """A view of the filled part of one column; invalid after the next append."""
        return self._data[index, : self._size]

    def last(self, index: int) -> float | None:
        """The most recent value of a column, or ``None`` when empty."""
        return float(self._data[index, self._size - 1]) if self._size else None

    def _reserve(self, capacity: int) -> None:
        grown = np.full((self._data.shape[0], capacity), np.nan)
        grown[:, : self._size] = self._data[:, : self._size]
        self._data = grown
