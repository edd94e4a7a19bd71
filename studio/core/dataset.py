"""Reading training files, detecting their record shape and normalising them to one chat form.

Every record becomes either `{"messages": [{"role": ..., "content": ...}, ...]}` (chat) or
`{"text": ...}` (plain text for continued pre-training). Problems are collected as
`file:line: reason` rather than raised one at a time, so the user sees every bad row at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

FORMATS = ("messages", "conversations", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}


@dataclass(frozen=True)
class DataIssue:
    """One problem in a data file, located by line (JSONL) or record number (JSON array)."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DataError(ValueError):
    """The data cannot be trained on; `issues` lists every located problem."""

    def __init__(self, message: str, issues: list[DataIssue] | None = None):
        self.issues = issues or []
        shown = "\n".join(str(i) for i in self.issues[:10])
        more = f"\n… and {len(self.issues) - 10} more" if len(self.issues) > 10 else ""
        super().__init__(f"{message}\n{shown}{more}" if shown else message)


@dataclass
class LoadedData:
    """A normalised dataset: examples in chat/text form, with their source lines and the problems found."""

    path: Path
    format: str
    evidence: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)


def read_records(path: Path) -> Iterator[tuple[int, Any] | DataIssue]:
    """Yield (line, record) for each record, or a DataIssue for a line that is not valid JSON."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl or .json)")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[error.start]:#04x}); save the file as UTF-8") from None
    stripped = text.lstrip()
    if suffix == ".json" and stripped.startswith(("[", "{")):
        yield from _json_document_records(path, text)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield DataIssue(path, number, f"malformed JSON: {error.msg} (column {error.colno})")


def _json_document_records(path: Path, text: str) -> Iterator[tuple[int, Any] | DataIssue]:
    """Records of a JSON array (or an object holding one array), each located by the line it starts on."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        yield DataIssue(path, error.lineno, f"malformed JSON: {error.msg} (column {error.colno})")
        return
    if isinstance(document, dict):
        arrays = [v for v in document.values() if isinstance(v, list)]
        if len(arrays) != 1:
            yield DataIssue(path, 1, "a JSON object must hold exactly one list of records")
            return
        document = arrays[0]
    if not isinstance(document, list):
        yield DataIssue(path, 1, "expected a list of records")
        return
    starts = _record_start_lines(text, len(document))
    for index, record in enumerate(document):
        yield starts[index], record


def _record_start_lines(text: str, count: int) -> list[int]:
    """Line where each top-level array element starts, found by a light scan of brackets and strings."""
    lines, depth, line, in_string, escaped = [], 0, 1, False, False
    expecting = False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if depth == 1 and expecting and not ch.isspace() and ch not in ",]":
            lines.append(line)
            expecting = False
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth == 1:
                expecting = True
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expecting = True
    lines += [line] * (count - len(lines))
    return lines


def detect_format(record: Any) -> tuple[str, str]:
    """The record shape and the evidence for it, e.g. ("messages", "key 'messages' holds a list")."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if isinstance(record.get("messages"), list):
        return "messages", "key 'messages' holds a list of role/content turns (OpenAI chat)"
    if isinstance(record.get("conversations"), list):
        return "conversations", "key 'conversations' holds a list of from/value turns (ShareGPT)"
    if {"instruction", "output"} <= keys:
        return "alpaca", "keys 'instruction' and 'output' (Alpaca)"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion", "keys 'prompt' and 'completion'"
    if "text" in keys:
        return "text", "key 'text' holds plain text (continued pre-training)"
    raise ValueError(f"unrecognised record shape (keys: {', '.join(sorted(keys)) or 'none'})")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def normalise(record: Any, fmt: str) -> dict[str, Any]:
    """Convert one record to `{"messages": [...]}` or `{"text": ...}`; raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "messages":
        return {"messages": _normalise_turns(record.get("messages"), "messages", "role", "content", None)}
    if fmt == "conversations":
        return {"messages": _normalise_turns(record.get("conversations"), "conversations", "from", "value",
                                             SHAREGPT_ROLES)}
    if fmt == "alpaca":
        instruction = _text(record.get("instruction"), "'instruction'")
        extra = record.get("input") or ""
        prompt = f"{instruction}\n\n{_text(extra, chr(39) + 'input' + chr(39))}" if extra else instruction
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": _text(record.get("output"), "'output'")}]
        if record.get("system"):
            messages.insert(0, {"role": "system", "content": _text(record["system"], "'system'")})
        return {"messages": messages}
    if fmt == "prompt_completion":
        return {"messages": [{"role": "user", "content": _text(record.get("prompt"), "'prompt'")},
                             {"role": "assistant", "content": _text(record.get("completion"), "'completion'")}]}
    if fmt == "text":
        text = _text(record.get("text"), "'text'")
        if not text.strip():
            raise ValueError("'text' is empty")
        return {"text": text}
    raise ValueError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")


def _normalise_turns(turns: Any, key: str, role_key: str, content_key: str,
                     role_map: dict[str, str] | None) -> list[dict[str, str]]:
    if not isinstance(turns, list):
        raise ValueError(f"'{key}' must be a list")
    if not turns:
        raise ValueError(f"'{key}' is empty")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"{key}[{i}] must be an object, got {type(turn).__name__}")
        raw_role = turn.get(role_key)
        role = role_map.get(raw_role) if role_map is not None else raw_role
        if role not in ROLES:
            raise ValueError(f"{key}[{i}]: unknown role {raw_role!r} (expected one of "
                             f"{', '.join(role_map or ROLES)})")
        content = turn.get(content_key)
        if content is None and turn.get("tool_calls"):
            content = ""  # an assistant turn that only calls tools
        if not isinstance(content, str):
            raise ValueError(f"{key}[{i}].{content_key} must be a string, got {type(content).__name__}")
        if turn.get("tool_calls"):  # kept as text so the model learns to emit the call
            content = (content + "\n" if content else "") + json.dumps(turn["tool_calls"], ensure_ascii=False)
        if not content.strip():
            raise ValueError(f"{key}[{i}]: empty {role} message")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"'{key}' has no assistant turn to learn from")
    return messages


def load_data(path: Path, fmt: str = "auto") -> LoadedData:
    """Read and normalise a whole file, collecting every bad row as a DataIssue."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    result = LoadedData(path=path, format=fmt, evidence="chosen by the user" if fmt != "auto" else "")
    for item in read_records(path):
        if isinstance(item, DataIssue):
            result.issues.append(item)
            continue
        line, record = item
        try:
            if result.format == "auto":
                result.format, result.evidence = detect_format(record)
            result.examples.append(normalise(record, result.format))
            result.lines.append(line)
        except ValueError as error:
            result.issues.append(DataIssue(path, line, str(error)))
    return result


def load_training_data(path: Path, fmt: str = "auto") -> LoadedData:
    """Like load_data, but any bad row or an empty file is a DataError (training never skips data silently)."""
    data = load_data(path, fmt)
    if data.issues:
        raise DataError(f"{path}: {len(data.issues)} bad row(s)", data.issues)
    if not data.examples:
        raise DataError(f"{path}: no examples")
    return data
