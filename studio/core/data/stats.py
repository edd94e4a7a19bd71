"""Token-length statistics of a dataset, and the `data inspect` report built on them.

`measure_tokens` encodes rows with the trainer's own `encode_examples` in a seeded random order, so
partial results (reported through `on_partial`) are an unbiased sample and converge on the exact
figures when every row is done: a million-row file shows a useful histogram within seconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studio.core.data.loading import ScanCancelled
from studio.core.data.table import ExampleRows, LineNumbers, LoadedData
from studio.core.data.tokens import IGNORE_INDEX, encode_examples
from studio.core.system.tasks import NO_TASK, TaskState

_CHUNK = 64


NO_TRAINED_TOKEN = 2**31 - 1


@dataclass
class TokenStats:
    """Token counts of the rows measured so far (all of them when `complete`).

    Per measured row: its length before truncation, its trained tokens and the position of its first
    trained token, so the figures for another max_length need no re-encoding.
    """

    total_rows: int
    max_length: int
    lengths: Any  # numpy int32: tokens per row, before truncation
    trained: Any  # numpy int32: trained tokens per row, before truncation
    first_trained: Any  # numpy int32: index of the first trained token (NO_TRAINED_TOKEN when none)
    line_numbers: Any  # numpy int64: the source line (or row) of each measured row
    complete: bool = False
    seconds: float = 0.0

    @property
    def measured(self) -> int:
        return len(self.lengths)

    def with_max_length(self, max_length: int) -> TokenStats:
        return dataclasses.replace(self, max_length=max_length)

    @property
    def truncated_rows(self) -> int:
        """Rows longer than max_length among those measured."""
        return int((self.lengths > self.max_length).sum())

    def untrained_rows_at(self, max_length: int) -> int:
        return int((self.first_trained >= max_length).sum())

    @property
    def untrained_rows(self) -> int:
        """Rows with no trained token within max_length (TRL drops them; they teach nothing)."""
        return self.untrained_rows_at(self.max_length)

    @property
    def untrained_lines(self) -> list[int]:
        import numpy as np

        return [int(n) for n in np.sort(self.line_numbers[self.first_trained >= self.max_length])[:50]]

    @property
    def rows_per_second(self) -> float:
        return self.measured / self.seconds if self.seconds > 0 else 0.0

    def estimate(self, count: int) -> int:
        """A count among the measured rows scaled to the whole dataset."""
        if self.complete or not self.measured:
            return count
        return round(count * self.total_rows / self.measured)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        if not self.measured:
            return {"rows": self.total_rows, "rows_measured": 0, "complete": self.complete}
        lengths = self.lengths
        return {
            "rows": self.total_rows,
            "rows_measured": self.measured,
            "complete": self.complete,
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 1),
            "median": int(np.median(lengths)),
            "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "total_tokens": int(lengths.sum()),
            "trained_tokens": int(self.trained.sum()),
            "max_length": self.max_length,
            "truncated_rows": self.truncated_rows,
            "untrained_rows": self.untrained_rows,
            "untrained_lines": self.untrained_lines[:20],
            "rows_per_second": round(self.rows_per_second, 1),
        }

    def histogram(self, bins: int = 40) -> tuple[Any, Any]:
        """(edges, counts) of the token lengths; the range always reaches past max_length."""
        import numpy as np

        if not self.measured:
            return np.array([0.0, 1.0]), np.array([0])
        top = max(int(self.lengths.max()), self.max_length) * 1.02
        counts, edges = np.histogram(self.lengths, bins=bins, range=(0, top))
        return edges, counts


def _take(examples: Sequence[dict[str, Any]], indices: Any) -> list[dict[str, Any]]:
    if isinstance(examples, ExampleRows):
        return examples._convert(examples.table.take(indices).to_pylist())
    return [examples[int(i)] for i in indices]


def _take_lines(lines: Sequence[int], indices: Any, total: int) -> list[int]:
    if len(lines) != total:
        return [int(i) + 1 for i in indices]
    if isinstance(lines, LineNumbers):
        return lines.table.column("line").take(indices).to_pylist()
    return [lines[int(i)] for i in indices]


def measure_tokens(
    tokenizer: Any,
    data: LoadedData,
    *,
    train_on_responses_only: bool = True,
    max_length: int = 1024,
    limit: int | None = None,
    seed: int = 0,
    partial_every: float = 0.25,
    task: TaskState = NO_TASK,
) -> TokenStats:
    """Token length and trained tokens of every row (or of `limit` random rows), in a seeded random order: the
    TokenStats so far through `task.partial` every `partial_every` seconds; ScanCancelled once `task.cancelled()`."""
    import numpy as np

    total = len(data.examples)
    order = np.random.default_rng(seed).permutation(total) if total else np.zeros(0, dtype=np.int64)
    if limit is not None:
        order = order[:limit]
    lengths = np.zeros(len(order), dtype=np.int32)
    trained = np.zeros(len(order), dtype=np.int32)
    first_trained = np.zeros(len(order), dtype=np.int32)
    line_numbers = np.zeros(len(order), dtype=np.int64)
    started = last = time.monotonic()
    done = 0

    def snapshot(complete: bool) -> TokenStats:
        return TokenStats(total, max_length, lengths[:done].copy(), trained[:done].copy(), first_trained[:done].copy(),
                          line_numbers[:done].copy(), complete, time.monotonic() - started)

    for start in range(0, len(order), _CHUNK):
        if task.cancelled():
            raise ScanCancelled()
        chunk = order[start:start + _CHUNK]
        examples = _take(data.examples, chunk)
        line_numbers[done:done + len(chunk)] = _take_lines(data.lines, chunk, total)
        for encoded in encode_examples(tokenizer, examples, train_on_responses_only=train_on_responses_only):
            labels = encoded["labels"]
            lengths[done] = len(labels)
            positions = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
            trained[done] = len(positions)
            first_trained[done] = positions[0] if positions else NO_TRAINED_TOKEN
            done += 1
        if time.monotonic() - last >= partial_every:
            last = time.monotonic()
            task.partial(snapshot(False))
    return snapshot(limit is None or limit >= total)


# ----------------------------------------------------------------------------------------------------
# The `data inspect` report


def inspection_report(data: LoadedData, stats: TokenStats | None = None, *, model: str | None = None,
                      ) -> dict[str, Any]:
    """Everything `finetune-studio data inspect` says about a dataset, as plain JSON-able data."""
    report: dict[str, Any] = {
        "path": str(data.path),
        "source": data.source_kind,
        "encoding": data.encoding,
        "format": data.format or None,
        "evidence": data.evidence,
        "confident": data.confident,
        "columns": list(data.columns),
        "mapping": dict(data.mapping),
        "rows": len(data.examples),
        "bad_rows": data.issue_count,
        "errors": [{"line" if issue.unit == "line" else "row": issue.line, "reason": issue.reason,
                    "message": str(issue)} for issue in data.issues],
        "duplicates": data.duplicates,
        "duplicate_examples": [{"line": a, "repeats_line": b} for a, b in data.duplicate_pairs],
    }
    if stats is not None:
        report["model"] = model
        report["tokens"] = stats.summary()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the few lines a person reads in a terminal."""
    lines = [f"{report['path']}  ({report['source']}, {report['encoding'] or 'binary'})"]
    if report["format"]:
        lines.append(f"format:     {report['format']} — {report['evidence']}")
    else:
        lines.append(f"format:     not recognised — {report['evidence']}")
    if report["mapping"]:
        pairs = ",".join(f"{k}={v}" for k, v in report["mapping"].items())
        if report["format"]:
            lines.append(f"mapping:    {pairs.replace(',', ', ')}")
        else:  # detected from the column names but not applied: the rows were not read with it
            lines.append(f"suggested:  {pairs.replace(',', ', ')} — not applied; read with it: "
                         f"--columns {pairs}")
    lines.append(f"rows:       {report['rows']:,} usable, {report['bad_rows']:,} bad, "
                 f"{report['duplicates']:,} duplicate(s)")
    for pair in report["duplicate_examples"][:3]:
        lines.append(f"            line {pair['line']} repeats line {pair['repeats_line']}")
    tokens = report.get("tokens")
    if tokens and tokens.get("rows_measured"):
        sampled = "" if tokens["complete"] else f" (a random sample of {tokens['rows_measured']:,} rows)"
        lines.append(f"tokens:     min {tokens['min']}, median {tokens['median']}, mean {tokens['mean']}, "
                     f"p95 {tokens['p95']}, max {tokens['max']}{sampled} — {report['model']}")
        lines.append(f"            {tokens['truncated_rows']:,} row(s) longer than max_length {tokens['max_length']} "
                     f"(truncated); {tokens['untrained_rows']:,} row(s) with no trained token")
        if tokens["untrained_lines"]:
            lines.append("            no trained token on line(s) "
                         + ", ".join(map(str, tokens["untrained_lines"][:10])))
    if report["errors"]:
        lines.append(f"errors ({report['bad_rows']:,}):")
        lines.extend(f"  {error['message']}" for error in report["errors"][:50])
        if report["bad_rows"] > 50:
            lines.append(f"  … and {report['bad_rows'] - 50:,} more")
    return "\n".join(lines)
