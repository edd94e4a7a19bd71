"""Which record shape a source holds: the shapes and their fields, detection from a sample of records, the column
mapping (source column → field) suggested from column names and applied to records, and its `field=column` text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _columns_of(records: Sequence[Any]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            columns.update(dict.fromkeys(map(str, record)))
    return list(columns)


FORMATS = ("messages", "conversations", "alpaca", "prompt_completion", "text")
FORMAT_NAMES = {
    "messages": "OpenAI messages",
    "conversations": "ShareGPT conversations",
    "alpaca": "Alpaca",
    "prompt_completion": "prompt/completion",
    "text": "plain text",
}

MAPPING_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "conversations": ("conversations",),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion", "system"),
    "text": ("text",),
}
PREFERENCE_FORMATS = ("preference", "unpaired_preference", "prompt_only")
"""The shapes the methods with records of their own read (each method's DataShape says which); kept apart from
FORMATS, which SFT reads."""
PREFERENCE_FORMAT_NAMES = {
    "preference": "prompt/chosen/rejected pairs",
    "unpaired_preference": "prompt/completion/label (desirable or not)",
    "prompt_only": "prompts",
}
PREFERENCE_MAPPING_FIELDS: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected", "system"),
    "unpaired_preference": ("prompt", "completion", "label", "system"),
    "prompt_only": ("prompt", "completion", "system"),
}
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
    "chosen": "Chosen reply (preferred)",
    "rejected": "Rejected reply",
    "label": "Label (true = desirable)",
}
_SYNONYMS = {
    "messages": ("messages", "conversation", "conversations", "chat", "dialog", "dialogue", "turns"),
    "prompt": ("prompt", "question", "query", "input", "instruction", "human", "user", "source", "request"),
    "completion": ("completion", "answer", "response", "output", "reply", "target", "gpt", "assistant", "chosen"),
    "text": ("text", "content", "document", "body", "sentence", "passage"),
    "system": ("system", "system_prompt", "system_message"),
}
_DETECTION_SAMPLE = 100


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
    known = {f for fields in (*MAPPING_FIELDS.values(), *PREFERENCE_MAPPING_FIELDS.values()) for f in fields}
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
