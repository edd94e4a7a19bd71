"""The normalised examples as an Arrow table: written batch by batch (spilling to a file beyond a size, so a
million-row source is never held as Python lists), read back row by row on demand (`LoadedData.examples`), with
the source line of every row and the duplicate count.
"""

from __future__ import annotations

import shutil
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.data.issues import DataIssue

_BATCH_ROWS = 1000
_SPILL_BYTES = 64 << 20


# ----------------------------------------------------------------------------------------------------
# The normalised examples, held by Arrow


def normalised_schema():
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("line", pa.int64()), ("messages", pa.list_(turn)), ("text", pa.string())])


def _row_example(row: dict[str, Any]) -> dict[str, Any]:
    return {"text": row["text"]} if row["messages"] is None else {"messages": row["messages"]}


class _ArrowSequence(Sequence):
    """A read-only sequence over an Arrow table that compares equal to a list with the same items."""

    def __init__(self, table: Any, arrow_path: Path | None = None):
        self.table = table
        self.arrow_path = arrow_path

    def __len__(self) -> int:
        return self.table.num_rows

    def _convert(self, rows: list[dict[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._convert(self.table.slice(start, max(0, stop - start)).to_pylist())
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("index out of range")
        return self._convert(self.table.slice(index, 1).to_pylist())[0]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.table.to_batches(max_chunksize=_BATCH_ROWS):
            yield from self._convert(batch.to_pylist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, _ArrowSequence)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = list(self[:3])
        return f"{type(self).__name__}({head}{' …' if len(self) > 3 else ''}, {len(self)} rows)"


class ExampleRows(_ArrowSequence):
    """Normalised examples (`{"messages": ...}` or `{"text": ...}`) read from Arrow on demand."""

    def _convert(self, rows):
        return [_row_example(row) for row in rows]


class LineNumbers(_ArrowSequence):
    """The source line (or row) of each example, from the same Arrow table."""

    def __init__(self, table: Any, arrow_path: Path | None = None):
        super().__init__(table.select(["line"]), arrow_path)

    def _convert(self, rows):
        return [row["line"] for row in rows]


@dataclass
class LoadedData:
    """A normalised dataset: examples in chat/text form, with their source lines and the problems found.

    `examples` and `lines` are lists when built by hand, and Arrow-backed sequences when read by
    `load_data`; both index, iterate and compare like lists.
    """

    path: Path
    format: str
    evidence: str
    examples: Sequence[dict[str, Any]] = field(default_factory=list)
    lines: Sequence[int] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    source_kind: str = ""
    encoding: str = ""
    columns: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    confident: bool = True
    issue_total: int = 0
    duplicates: int = 0
    duplicate_pairs: list[tuple[int, int]] = field(default_factory=list)
    unit: str = "line"
    complete: bool = True

    @property
    def issue_count(self) -> int:
        """Every problem found (`issues` keeps the first MAX_KEPT_ISSUES)."""
        return max(self.issue_total, len(self.issues))

    @property
    def row_count(self) -> int:
        return len(self.examples)

    def to_dataset(self) -> Any:
        """The examples as a `datasets.Dataset` with columns line, messages, text (memory-mapped when large)."""
        import datasets
        from datasets.table import InMemoryTable

        if isinstance(self.examples, ExampleRows):
            if self.examples.arrow_path is not None:
                return datasets.Dataset.from_file(str(self.examples.arrow_path))
            return datasets.Dataset(InMemoryTable(self.examples.table))
        return datasets.Dataset(InMemoryTable(_table_from_lists(self.examples, self.lines)))


def _table_from_lists(examples: Sequence[dict[str, Any]], lines: Sequence[int]) -> Any:
    import pyarrow as pa

    lines = list(lines) if len(lines) == len(examples) else list(range(1, len(examples) + 1))
    return pa.table({"line": lines,
                     "messages": [e.get("messages") for e in examples],
                     "text": [e.get("text") for e in examples]}, schema=normalised_schema())


class _NormalisedWriter:
    """Collects normalised examples into Arrow record batches; spills to a file once they grow large.

    Turns are kept as flat role/content lists with offsets: building the nested Arrow column from
    those is several times faster than converting a list of dicts.
    """

    def __init__(self, spill_dir: Callable[[], Path] | None):
        self._spill_dir = spill_dir
        self._schema = normalised_schema()
        self._reset()
        self._batches: list[Any] = []
        self._bytes = 0
        self._writer = None
        self._sink = None
        self.path: Path | None = None
        self.count = 0
        self.hashes = array("q")

    def _reset(self) -> None:
        self._lines: list[int] = []
        self._offsets: list[int] = [0]
        self._valid: list[bool] = []
        self._roles: list[str] = []
        self._contents: list[str] = []
        self._texts: list[Any] = []

    def add(self, line: int, example: dict[str, Any]) -> None:
        messages = example.get("messages")
        self._lines.append(line)
        if messages is None:
            text = example["text"]
            self._texts.append(text)
            self._valid.append(False)
            self._offsets.append(self._offsets[-1])
            self.hashes.append(hash(text))
        else:
            roles = [m["role"] for m in messages]
            contents = [m["content"] for m in messages]
            self._roles.extend(roles)
            self._contents.extend(contents)
            self._texts.append(None)
            self._valid.append(True)
            self._offsets.append(self._offsets[-1] + len(messages))
            self.hashes.append(hash((tuple(roles), tuple(contents))))
        self.count += 1
        if len(self._lines) >= _BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        import pyarrow as pa

        turns = pa.StructArray.from_arrays([pa.array(self._roles, pa.string()), pa.array(self._contents, pa.string())],
                                           fields=list(self._schema.field("messages").type.value_type))
        mask = None if all(self._valid) else pa.array([not v for v in self._valid])
        messages = pa.ListArray.from_arrays(pa.array(self._offsets, pa.int32()), turns, mask=mask)
        batch = pa.RecordBatch.from_arrays(
            [pa.array(self._lines, pa.int64()), messages, pa.array(self._texts, pa.string())], schema=self._schema)
        self._reset()
        if self._writer is not None:
            self._writer.write_batch(batch)
            return
        self._batches.append(batch)
        self._bytes += batch.nbytes
        if self._spill_dir is not None and self._bytes > _SPILL_BYTES:
            self.path = self._spill_dir() / "normalised.arrow"
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
            for pending in self._batches:
                self._writer.write_batch(pending)
            self._batches = []

    def discard(self) -> None:
        """Close and delete the spill file, if any (a cancelled or broken read)."""
        self.close()
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)
            self.path = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def finish(self) -> Any:
        """The whole table: in memory, or memory-mapped from the spill file."""
        import pyarrow as pa

        self.flush()
        if self._writer is not None:
            self.close()
            return _read_arrow(self.path)
        return pa.Table.from_batches(self._batches, schema=self._schema)


def _read_arrow(path: Path) -> Any:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def _count_duplicates(hashes: array, lines: Sequence[int] | None) -> tuple[int, list[tuple[int, int]]]:
    """How many examples repeat an earlier one, and (line, line of the first) for the first few."""
    if len(hashes) < 2:
        return 0, []
    import numpy as np

    values = np.frombuffer(hashes, dtype=np.int64)
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    repeats = np.nonzero(first[inverse] != np.arange(len(values)))[0]
    pairs = []
    if lines is not None:
        for index in repeats[:5]:
            pairs.append((lines[int(index)], lines[int(first[inverse[index]])]))
    return int(len(repeats)), pairs
