"""Reading training data, detecting its record shape and normalising it to one chat form.

Every record becomes either `{"messages": [{"role": ..., "content": ...}, ...]}` (chat) or
`{"text": ...}` (plain text for continued pre-training). Problems are collected as
`file:line: reason` rather than raised one at a time, so the user sees every bad row at once.

Sources are read by `studio.core.data_sources` (JSON, JSONL, CSV/TSV, Parquet, plain text,
`save_to_disk` folders, Hub ids); the normalised examples are written to an Arrow table batch by batch, so a
million-row file is never held as Python lists. `LoadedData.examples` reads rows from that table
on demand and `LoadedData.to_dataset()` hands it to `datasets` for training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.data_issues import DataError, DataIssue
from studio.core.data_sources import (
    TEXT_SPLITS, TOO_DEEP, BrokenDocumentError, Source, normalise_encoding, open_records, resolve_source,
)

__all__ = [
    "FORMATS", "ROLES", "MAPPING_FIELDS", "DataIssue", "DataError", "LoadedData", "ShapeDetection", "ScanCancelled",
    "read_records", "detect_format", "detect_shape", "normalise", "load_data", "load_training_data",
    "require_trainable", "parse_column_mapping", "format_column_mapping", "load_with_settings",
]

FORMATS = ("messages", "conversations", "alpaca", "prompt_completion", "text")
FORMAT_NAMES = {
    "messages": "OpenAI messages",
    "conversations": "ShareGPT conversations",
    "alpaca": "Alpaca",
    "prompt_completion": "prompt/completion",
    "text": "plain text",
}
ROLES = ("system", "user", "assistant", "tool")
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                "tool": "tool", "function": "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}

MAPPING_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "conversations": ("conversations",),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion", "system"),
    "text": ("text",),
}
"""For each record shape, the fields a source column can be mapped to (required ones first)."""
OPTIONAL_FIELDS = {"input", "system"}
FIELD_LABELS = {
    "messages": "Turns (list of role/content)",
    "conversations": "Turns (list of from/value)",
    "instruction": "Instruction (user)",
    "input": "Input (optional, appended to the instruction)",
    "output": "Output (assistant)",
    "system": "System prompt (optional)",
    "prompt": "Prompt (user)",
    "completion": "Completion (assistant)",
    "text": "Text",
}
_SYNONYMS = {
    "messages": ("messages", "conversation", "conversations", "chat", "dialog", "dialogue", "turns"),
    "prompt": ("prompt", "question", "query", "input", "instruction", "human", "user", "source", "request"),
    "completion": ("completion", "answer", "response", "output", "reply", "target", "gpt", "assistant", "chosen"),
    "text": ("text", "content", "document", "body", "sentence", "passage"),
    "system": ("system", "system_prompt", "system_message"),
}

MAX_KEPT_ISSUES = 1000
"""Issues beyond this many are counted, not kept (a wholly broken million-row file stays cheap)."""
HEAD_ROWS = 200
_DETECTION_SAMPLE = 100
_BATCH_ROWS = 1000
_SPILL_BYTES = 64 << 20
_CACHE_VERSION = 1
_CACHE_KEEP = 4


class ScanCancelled(Exception):
    """Reading was cancelled through `should_stop`."""


# ----------------------------------------------------------------------------------------------------
# Record shapes


def read_records(path: Path | str, *, encoding: str = "utf-8") -> Iterator[tuple[int, Any] | DataIssue]:
    """Yield (line, record) for each record, or a DataIssue for a part that is not a valid record."""
    stream = open_records(path, encoding=encoding)
    try:
        yield from stream
    except BrokenDocumentError as broken:
        yield broken.issue


def detect_format(record: Any) -> tuple[str, str]:
    """The record shape and the evidence for it, e.g. ("messages", "key 'messages' holds a list")."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if _is_turn_list(record.get("messages")):
        return "messages", "key 'messages' holds a list of role/content turns (OpenAI chat)"
    if _is_turn_list(record.get("conversations")):
        return "conversations", "key 'conversations' holds a list of from/value turns (ShareGPT)"
    if {"instruction", "output"} <= keys:
        return "alpaca", "keys 'instruction' and 'output' (Alpaca)"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion", "keys 'prompt' and 'completion'"
    if "text" in keys:
        return "text", "key 'text' holds plain text (continued pre-training)"
    raise ValueError(f"unrecognised record shape (keys: {', '.join(sorted(map(str, keys))) or 'none'})")


def _is_turn_list(value: Any) -> bool:
    if isinstance(value, list):
        return True
    # A CSV cell (or a string column) holding the turns as JSON text.
    return isinstance(value, str) and value.lstrip().startswith("[") and value.rstrip().endswith("]")


@dataclass(frozen=True)
class ShapeDetection:
    """What the first records look like: the shape, why, and how sure the guess is."""

    format: str
    evidence: str
    confident: bool
    mapping: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def format_from_mapping(mapping: Mapping[str, str]) -> str:
    """The record shape a column mapping implies ('' when it implies none)."""
    keys = set(mapping)
    for fmt in ("messages", "conversations"):
        if fmt in keys:
            return fmt
    if {"instruction", "output"} & keys:
        return "alpaca"
    if {"prompt", "completion"} & keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return ""


def _apply_mapping(record: dict, mapping: Mapping[str, str]) -> dict:
    """The record with mapped columns renamed to the field names the shapes use."""
    renamed = {k: v for k, v in record.items() if k not in mapping.values()}
    for target, column in mapping.items():
        if column in record:
            renamed[target] = record[column]
    return renamed


def suggest_mapping(columns: Sequence[str], sample: Sequence[Any] = ()) -> tuple[str, dict[str, str]]:
    """A guess at which column is which when no known shape matches, from common column names."""
    lowered = {str(c).lower(): str(c) for c in columns}
    first = next((r for r in sample if isinstance(r, dict)), {})

    def pick(field_name: str, taken: set[str]) -> str | None:
        for synonym in _SYNONYMS[field_name]:
            column = lowered.get(synonym)
            if column is not None and column not in taken:
                return column
        return None

    turns = pick("messages", set())
    if turns is not None and _is_turn_list(first.get(turns, [])):
        value = first.get(turns)
        style = "conversations" if isinstance(value, list) and value and isinstance(value[0], dict) \
            and "from" in value[0] else "messages"
        return style, {style: turns}
    prompt = pick("prompt", set())
    completion = pick("completion", {prompt} if prompt else set())
    if prompt and completion:
        mapping = {"prompt": prompt, "completion": completion}
        system = pick("system", {prompt, completion})
        if system:
            mapping["system"] = system
        return "prompt_completion", mapping
    text = pick("text", set())
    if text:
        return "text", {"text": text}
    strings = [c for c in columns if isinstance(first.get(c), str)]
    if len(strings) >= 2:
        return "prompt_completion", {"prompt": strings[0], "completion": strings[1]}
    if len(strings) == 1:
        return "text", {"text": strings[0]}
    return "", {}


def detect_shape(records: Sequence[Any], columns: Sequence[str] = (), *, fmt: str = "auto",
                 mapping: Mapping[str, str] | None = None) -> ShapeDetection:
    """The record shape of a sample of records, with the evidence (and a suggested mapping if none fits)."""
    mapping = dict(mapping or {})
    shown = ", ".join(f"{k} = '{v}'" for k, v in mapping.items())
    if fmt != "auto":
        return ShapeDetection(fmt, "chosen by the user" + (f", with the column mapping ({shown})" if mapping else ""),
                              True, mapping)
    if mapping:
        implied = format_from_mapping(mapping)
        if implied:
            return ShapeDetection(implied, f"from the column mapping ({shown})", True, mapping)
    counts: Counter[str] = Counter()
    evidence: dict[str, str] = {}
    objects = 0
    for record in records:
        if not isinstance(record, dict):
            continue
        objects += 1
        try:
            found, why = detect_format(record)
        except ValueError:
            continue
        counts[found] += 1
        evidence.setdefault(found, why)
    if not counts:
        keys = list(map(str, columns)) or _columns_of(records)
        guessed, suggestion = suggest_mapping(keys, records)
        if guessed:
            shown = ", ".join(f"{k} = '{v}'" for k, v in suggestion.items())
            why = (f"no known field names (columns: {', '.join(keys)}); the columns look like "
                   f"{FORMAT_NAMES[guessed]} with {shown} — check the column mapping")
        else:
            why = f"no known field names (columns: {', '.join(keys) or 'none'}); map the columns"
        return ShapeDetection("", why, False, suggestion, {guessed: 0} if guessed else {})
    best, matched = counts.most_common(1)[0]
    why = evidence[best]
    if objects > 1:
        why += f" in {matched} of the first {objects} records"
    others = [f"{n} look like {FORMAT_NAMES[f]}" for f, n in counts.most_common() if f != best]
    confident = matched >= 0.9 * objects
    if others:
        why += "; " + ", ".join(others)
    return ShapeDetection(best, why, confident, {}, dict(counts))


def _text(value: Any, what: str, *, present: bool = True) -> str:
    if not present:
        raise ValueError(f"{what} is missing")
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def normalise(record: Any, fmt: str, mapping: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Convert one record to `{"messages": [...]}` or `{"text": ...}`; raises ValueError with the reason.

    `mapping` names the source column of each field (e.g. {"prompt": "question"}); unmapped fields are
    read from the column of the same name.
    """
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    mapping = mapping or {}

    def column(name: str) -> str:
        return mapping.get(name, name)

    def get(name: str) -> tuple[Any, str, bool]:
        key = column(name)
        return record.get(key), f"'{key}'", key in record

    if fmt in ("messages", "conversations"):
        value, label, present = get(fmt)
        if not present:
            raise ValueError(f"{label} is missing")
        messages = _normalise_turns(value, column(fmt), OPENAI_ROLES if fmt == "messages" else SHAREGPT_ROLES)
        return {"messages": messages}
    if fmt == "alpaca":
        instruction = _text(*get("instruction")[:2], present=get("instruction")[2])
        extra, extra_label, _ = get("input")
        if extra is not None and not isinstance(extra, str):
            raise ValueError(f"{extra_label} must be a string, got {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        if not prompt.strip():
            raise ValueError(f"{get('instruction')[1]} is empty")
        output, output_label, present = get("output")
        output = _text(output, output_label, present=present)
        if not output.strip():
            raise ValueError(f"{output_label} is empty")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
        return {"messages": _with_system(messages, *get("system"))}
    if fmt == "prompt_completion":
        prompt, prompt_label, present = get("prompt")
        completion, completion_label, completion_present = get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational prompt/completion
            turns = (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]) + (
                completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}])
            return {"messages": _normalise_turns(turns, f"{column('prompt')}+{column('completion')}", OPENAI_ROLES)}
        prompt = _text(prompt, prompt_label, present=present)
        completion = _text(completion, completion_label, present=completion_present)
        if not prompt.strip():
            raise ValueError(f"{prompt_label} is empty")
        if not completion.strip():
            raise ValueError(f"{completion_label} is empty")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return {"messages": _with_system(messages, *get("system"))}
    if fmt == "text":
        value, label, present = get("text")
        text = _text(value, label, present=present)
        if not text.strip():
            raise ValueError(f"{label} is empty")
        return {"text": text}
    raise ValueError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")


def _with_system(messages: list[dict[str, str]], system: Any, label: str, present: bool) -> list[dict[str, str]]:
    if present and system is not None:
        if not isinstance(system, str):
            raise ValueError(f"{label} must be a string, got {type(system).__name__}")
        if system.strip():
            return [{"role": "system", "content": system}, *messages]
    return messages


def _content_text(content: Any, where: str) -> str:
    """A turn's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = []
        for part in content:
            if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"{where} holds a '{part.get('type')}' part; only text can be trained here")
            parts.append(part["text"])
        return "".join(parts)
    return content


_ANY_ROLES = {**SHAREGPT_ROLES, **OPENAI_ROLES}


def _normalise_turns(turns: Any, key: str, role_map: dict[str, str]) -> list[dict[str, str]]:
    if isinstance(turns, str) and turns.lstrip().startswith("["):  # a CSV cell holding the turns as JSON
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError as error:
            raise ValueError(f"'{key}' is text that is not a JSON list of turns: {error.msg} "
                             f"(character {error.pos + 1})") from None
        except RecursionError:
            raise ValueError(f"'{key}' is JSON text {TOO_DEEP}") from None
    if not isinstance(turns, list):
        raise ValueError(f"'{key}' must be a list")
    if not turns:
        raise ValueError(f"'{key}' is empty")
    messages = []
    learns = False
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"{key}[{i}] must be an object, got {type(turn).__name__}")
        # Either style of turn is accepted in either shape: role/content (OpenAI) or from/value (ShareGPT).
        if "role" in turn or "from" not in turn:
            raw_role, content, content_key = turn.get("role"), turn.get("content"), "content"
            roles = role_map if role_map is OPENAI_ROLES else _ANY_ROLES
        else:
            raw_role, content, content_key = turn.get("from"), turn.get("value"), "value"
            roles = SHAREGPT_ROLES
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            expected = ROLES if role_map is OPENAI_ROLES else tuple(role_map)
            raise ValueError(f"{key}[{i}]: unknown role {raw_role!r} (expected one of {', '.join(expected)})")
        tool_calls = turn.get("tool_calls")
        if type(content) is not str:
            content = _content_text(content, f"{key}[{i}].{content_key}")
            if content is None and tool_calls:
                content = ""  # an assistant turn that only calls tools
            if not isinstance(content, str):
                raise ValueError(f"{key}[{i}].{content_key} must be a string, got {type(content).__name__}")
        if tool_calls:  # kept as text so the model learns to emit the call
            content = (content + "\n" if content else "") + json.dumps(tool_calls, ensure_ascii=False)
        if not content or content.isspace():
            raise ValueError(f"{key}[{i}]: empty {role} message")
        messages.append({"role": role, "content": content})
        learns = learns or role == "assistant"
    if not learns:
        raise ValueError(f"'{key}' has no assistant turn to learn from")
    return messages


def parse_column_mapping(entries: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """`["prompt=question", "completion=answer"]` → {"prompt": "question", ...}; ValueError names a bad entry."""
    if not entries:
        return {}
    if isinstance(entries, Mapping):
        items = list(entries.items())
    else:
        items = []
        for entry in entries:
            if "=" not in entry:
                raise ValueError(f"'{entry}' is not field=column (e.g. prompt=question)")
            name, column = entry.split("=", 1)
            items.append((name.strip(), column.strip()))
    known = {f for fields in MAPPING_FIELDS.values() for f in fields}
    mapping = {}
    for name, column in items:
        if name not in known:
            raise ValueError(f"unknown field '{name}' (known: {', '.join(sorted(known))})")
        if not column:
            raise ValueError(f"no column given for '{name}'")
        mapping[name] = column
    return mapping


def format_column_mapping(mapping: Mapping[str, str]) -> list[str]:
    """The config form of a mapping: ["prompt=question", ...]."""
    return [f"{name}={column}" for name, column in mapping.items()]


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


# ----------------------------------------------------------------------------------------------------
# The on-disk cache of large scans (reopening a big file, and training after previewing, skip the scan)


def _cache_root() -> Path:
    from studio.core.paths import user_data_dir

    return user_data_dir() / "cache" / "data"


def _cache_key(source: Source, fmt: str, mapping: Mapping[str, str], encoding: str, split: str,
               text_split: str = "blank_lines") -> str | None:
    if source.path is None or not source.path.is_file():
        return None  # folders and Hub datasets are Arrow already (cached by datasets)
    stat = source.path.stat()
    payload = json.dumps([_CACHE_VERSION, str(source.path.resolve()), stat.st_size, stat.st_mtime_ns, fmt,
                          sorted(mapping.items()), encoding, split]
                         + ([text_split] if source.kind == "text" else []))
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _load_cached(key: str | None, source: Source) -> LoadedData | None:
    if key is None:
        return None
    folder = _cache_root() / key
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        table = _read_arrow(folder / "normalised.arrow")
    except (OSError, ValueError):
        return None
    os.utime(folder)  # most recently used
    return _loaded_from_table(source, table, folder / "normalised.arrow", meta)


def _loaded_from_table(source: Source, table: Any, arrow_path: Path | None, meta: dict[str, Any]) -> LoadedData:
    label = source.label
    issues = [DataIssue(label, line, reason, meta.get("unit", "line")) for line, reason in meta["issues"]]
    return LoadedData(
        path=label, format=meta["format"], evidence=meta["evidence"],
        examples=ExampleRows(table, arrow_path), lines=LineNumbers(table, arrow_path), issues=issues,
        source_kind=source.kind, encoding=meta["encoding"], columns=meta["columns"], mapping=meta["mapping"],
        confident=meta["confident"], issue_total=meta["issue_total"], duplicates=meta["duplicates"],
        duplicate_pairs=[tuple(p) for p in meta["duplicate_pairs"]], unit=meta.get("unit", "line"),
    )


def _new_cache_dir(key: str | None) -> Callable[[], Path] | None:
    if key is None:
        return None

    def make() -> Path:
        root = _cache_root()
        root.mkdir(parents=True, exist_ok=True)
        folder = root / f"{key}.{uuid.uuid4().hex[:8]}.partial"
        folder.mkdir()
        return folder

    return make


def _commit_cache(partial: Path, key: str, meta: dict[str, Any]) -> Path:
    """Write the scan's metadata and move its folder into place; returns where the arrow file now is."""
    (partial / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    target = partial.parent / key
    try:
        os.replace(partial, target)
    except OSError:  # another process cached the same scan first; ours stays until evicted
        return partial / "normalised.arrow"
    _evict_cache(target.parent, keep=target)
    return target / "normalised.arrow"


def _evict_cache(root: Path, keep: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    complete = [p for p in entries if not p.name.endswith(".partial")]
    stale = [p for p in entries if p.name.endswith(".partial") and time.time() - p.stat().st_mtime > 86400]
    for folder in complete[_CACHE_KEEP:] + stale:
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Loading


def load_data(
    path: Path | str,
    fmt: str = "auto",
    *,
    mapping: Mapping[str, str] | Sequence[str] | None = None,
    encoding: str = "utf-8",
    split: str = "train",
    progress: Callable[[float, int], None] | None = None,
    on_head: Callable[[LoadedData], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
    hub_reachable: Callable[[], bool] | None = None,
    text_split: str = "blank_lines",
) -> LoadedData:
    """Read and normalise a whole source, collecting every bad row as a DataIssue.

    A plain text file is cut into documents as `text_split` says: at blank lines, or one per file.

    A source that cannot be read at all (missing, unsupported, not in the encoding) raises DataError.
    `progress(fraction, rows)` is called every few thousand rows, `on_head(LoadedData)` once with the
    first rows (so a window can show them while the rest is read), and `should_stop()` is polled:
    when it returns True, ScanCancelled is raised.
    """
    source = resolve_source(path)
    if fmt not in ("auto", "", *FORMATS):
        raise DataError(f"{source.label}: unknown format '{fmt}' (known: auto, {', '.join(FORMATS)})")
    fmt = fmt or "auto"
    if text_split not in TEXT_SPLITS:
        raise DataError(f"{source.label}: unknown text split '{text_split}' (known: {', '.join(TEXT_SPLITS)})")
    try:
        mapping = parse_column_mapping(mapping)
        encoding = normalise_encoding(encoding)
    except ValueError as error:
        raise DataError(f"{source.label}: {error}") from None
    key = _cache_key(source, fmt, mapping, encoding, split, text_split) if use_cache else None
    cached = _load_cached(key, source)
    if cached is not None:
        if on_head is not None:
            on_head(_head_of(cached))
        if progress is not None:
            progress(1.0, cached.row_count)
        return cached

    stream = open_records(source, encoding=encoding, split=split, hub_reachable=hub_reachable, text_split=text_split)
    label, unit = source.label, source.unit
    writer = _NormalisedWriter(_new_cache_dir(key))
    issues: list[DataIssue] = []
    issue_total = 0
    broken: DataIssue | None = None

    def add_issue(issue: DataIssue) -> None:
        nonlocal issue_total
        issue_total += 1
        if len(issues) < MAX_KEPT_ISSUES:
            issues.append(issue)

    items = iter(stream)
    sample: list[Any] = []
    try:
        for item in items:
            sample.append(item)
            if len(sample) >= _DETECTION_SAMPLE:
                break
    except BrokenDocumentError as error:
        broken = error.issue
    records = [record for item in sample if not isinstance(item, DataIssue) for record in (item[1],)]
    detection = detect_shape(records, stream.columns, fmt=fmt, mapping=mapping)
    if source.kind == "text" and fmt == "auto" and not mapping:  # the file's kind is the evidence, not a key
        detection = ShapeDetection("text", "a plain text file (continued pre-training), " + (
            "the whole file as one document" if text_split == "file" else
            "one document per block of lines between blank lines"), True)
    mapping = dict(detection.mapping)  # for an unrecognised shape: the suggestion, shown but not applied
    hint = ""
    if not detection.format:
        example_mapping = ", ".join(f"{k}={v}" for k, v in detection.mapping.items()) or "prompt=question, " \
                                                                                       "completion=answer"
        hint = f"; say which column is which with a column mapping (e.g. {example_mapping})"
    head: list[tuple[int, dict[str, Any]]] = []
    head_sent = on_head is None
    started = time.monotonic()

    def handle(item: Any) -> None:
        if isinstance(item, DataIssue):
            add_issue(item if item.unit == unit else DataIssue(item.path, item.line, item.reason, unit))
            return
        line, record = item
        try:
            if not detection.format:
                try:
                    detect_format(record)
                except ValueError as error:
                    raise ValueError(f"{error}{hint}") from None
                raise ValueError(f"this record has a known shape, but the first records do not{hint}")
            example = normalise(record, detection.format, mapping)
        except ValueError as error:
            add_issue(DataIssue(label, line, str(error), unit))
            return
        writer.add(line, example)
        if len(head) < HEAD_ROWS:
            head.append((line, example))

    def meta() -> dict[str, Any]:
        return {"format": detection.format, "evidence": detection.evidence, "confident": detection.confident,
                "encoding": stream.encoding, "columns": list(stream.columns) or _columns_of(records),
                "mapping": mapping, "unit": unit}

    def send_head(complete: bool) -> None:
        nonlocal head_sent
        if head_sent:
            return
        head_sent = True
        on_head(LoadedData(path=label, format=detection.format, evidence=detection.evidence,
                           examples=[e for _, e in head], lines=[n for n, _ in head], issues=list(issues),
                           source_kind=source.kind, encoding=stream.encoding, columns=meta()["columns"],
                           mapping=mapping, confident=detection.confident, issue_total=issue_total, unit=unit,
                           complete=complete))

    try:
        for number, item in enumerate(_chain(sample, items), start=1):
            handle(item)
            if number % 500 == 0:
                if should_stop is not None and should_stop():
                    raise ScanCancelled()
                if not head_sent and (len(head) >= HEAD_ROWS or time.monotonic() - started > 0.5):
                    send_head(False)
                if progress is not None and number % 2000 == 0:
                    progress(stream.fraction_done(), writer.count)
    except BrokenDocumentError as error:
        broken = error.issue
    except BaseException:
        writer.discard()
        raise
    if broken is not None:  # a syntax error anywhere in a JSON document: none of its records can be trusted
        writer.discard()
        writer = _NormalisedWriter(None)
        head.clear()
        issues[:] = [broken]
        issue_total = 1
    table = writer.finish()
    duplicates, pairs = _count_duplicates(writer.hashes, LineNumbers(table))
    info = {**meta(), "issues": [[i.line, i.reason] for i in issues], "issue_total": issue_total,
            "duplicates": duplicates, "duplicate_pairs": pairs}
    arrow_path = writer.path
    if arrow_path is not None and key is not None:
        arrow_path = _commit_cache(arrow_path.parent, key, info)
        table = _read_arrow(arrow_path)
    send_head(True)
    if progress is not None:
        progress(1.0, writer.count)
    return _loaded_from_table(source, table, arrow_path, info)


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    yield from rest


def _columns_of(records: Sequence[Any]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            columns.update(dict.fromkeys(map(str, record)))
    return list(columns)


def _head_of(data: LoadedData) -> LoadedData:
    return LoadedData(path=data.path, format=data.format, evidence=data.evidence,
                      examples=list(data.examples[:HEAD_ROWS]), lines=list(data.lines[:HEAD_ROWS]),
                      issues=list(data.issues), source_kind=data.source_kind, encoding=data.encoding,
                      columns=data.columns, mapping=data.mapping, confident=data.confident,
                      issue_total=data.issue_total, unit=data.unit, complete=False)


def load_training_data(path: Path | str, fmt: str = "auto", *, skip_bad_rows: bool = False,
                       **options: Any) -> LoadedData:
    """Like load_data, but bad rows are a DataError unless `skip_bad_rows`; no rows at all always is.

    Training never skips data silently: skipped rows are still listed in `issues`.
    """
    return require_trainable(load_data(path, fmt, **options), skip_bad_rows=skip_bad_rows)


def require_trainable(data: LoadedData, *, skip_bad_rows: bool) -> LoadedData:
    """The data itself, or a DataError: bad rows unless `skip_bad_rows`, no usable rows at all always."""
    if data.issues and not skip_bad_rows:
        raise DataError(f"{data.path}: {data.issue_count} bad row(s)", data.issues, total=data.issue_count)
    if not len(data.examples):
        if data.issues:
            raise DataError(f"{data.path}: no usable examples ({data.issue_count} bad row(s))", data.issues,
                            total=data.issue_count)
        raise DataError(f"{data.path}: no examples")
    return data


def load_with_settings(settings: Any, path: str | Path | None = None, **options: Any) -> LoadedData:
    """load_data with a DataSettings' format, column mapping, encoding, split and text split (path: its
    train_file)."""
    return load_data(path if path is not None else settings.train_file, settings.format,
                     mapping=settings.column_mapping, encoding=settings.encoding, split=settings.split,
                     text_split=settings.text_split, **options)
