"""Located problems in training data: `DataIssue` (one bad row) and `DataError` (the data cannot be used).

Kept apart from the readers so every data module can raise them without import cycles;
`studio.core.data.loading` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)


class DataIssue:
    """One problem in a data file, located by line (text files) or row (Parquet, datasets folders, Hub)."""

    path: Path
    line: int
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        if self.unit == "row":
            return f"{self.path}: row {self.line}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


class DataError(ValueError):
    """The data cannot be trained on; `issues` lists every located problem.

    `total` is the number of problems found when more were found than kept in `issues`;
    `encoding_guess` is set when the text is not in the expected encoding and another one fits.
    """

    def __init__(self, message: str, issues: list[DataIssue] | None = None, *, total: int | None = None,
                 encoding_guess: Any = None):
        self.issues = issues or []
        self.total = max(total or 0, len(self.issues))
        self.encoding_guess = encoding_guess
        shown = "\n".join(str(i) for i in self.issues[:10])
        more = f"\n… and {self.total - 10} more" if self.total > 10 else ""
        super().__init__(f"{message}\n{shown}{more}" if shown else message)
