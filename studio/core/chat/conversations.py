"""Chat conversations saved and reopened as JSON, in OpenAI's `messages` shape.

    {"messages": [{"role": "system", "content": ...}, {"role": "user", ...}, {"role": "assistant", ...}],
     "finetune_studio": {"model": ..., "adapters": [...], "generation": {...},
                         "compare": {"adapter": ..., "base_messages": [...]}}}

`messages` alone is a valid OpenAI chat request (and a valid row of the studio's training data), so
a good conversation can be pasted into a dataset. A plain JSON list of messages opens too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")


class ConversationError(ValueError):
    """A conversation file that cannot be read; the message names the file and what is wrong."""


@dataclass
class Conversation:
    """The messages of one chat (system prompt first, if any) and how they were produced."""

    messages: list[dict[str, str]] = field(default_factory=list)
    model: str = ""
    adapters: list[str] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    base_messages: list[dict[str, str]] | None = None  # compare mode: the base model's side
    compare_adapter: str = ""

    @property
    def system_prompt(self) -> str:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else ""

    @property
    def turns(self) -> list[dict[str, str]]:
        """The messages without the system prompt."""
        return [m for i, m in enumerate(self.messages) if not (i == 0 and m["role"] == "system")]

    def to_json(self) -> dict[str, Any]:
        studio: dict[str, Any] = {"model": self.model, "adapters": self.adapters, "generation": self.generation}
        if self.base_messages is not None:
            studio["compare"] = {"adapter": self.compare_adapter, "base_messages": self.base_messages}
        return {"messages": self.messages, "finetune_studio": studio}


def _check_messages(messages: Any, path: Path, key: str) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        raise ConversationError(f"{path}: {key} must be a list of messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"{path}: {key}[{i}]"
        if not isinstance(message, dict):
            raise ConversationError(f"{where}: expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ConversationError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConversationError(f"{where}: content must be text")
        checked.append({"role": role, "content": content})
    return checked


def save_conversation(path: Path, conversation: Conversation) -> Path:
    """Write the conversation as pretty JSON (atomically: a crash never leaves half a file)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(conversation.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def load_conversation(path: Path) -> Conversation:
    """Read a conversation saved by the studio, an OpenAI `{"messages": [...]}` object or a bare list."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConversationError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConversationError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ConversationError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    if isinstance(data, list):
        return Conversation(messages=_check_messages(data, path, "messages"))
    if not isinstance(data, dict) or "messages" not in data:
        raise ConversationError(f"{path}: expected an object with a 'messages' list")
    studio = data.get("finetune_studio") if isinstance(data.get("finetune_studio"), dict) else {}
    compare = studio.get("compare") if isinstance(studio.get("compare"), dict) else None
    return Conversation(
        messages=_check_messages(data["messages"], path, "messages"),
        model=str(studio.get("model") or ""),
        adapters=[str(a) for a in studio.get("adapters") or []],
        generation=dict(studio.get("generation") or {}),
        base_messages=_check_messages(compare["base_messages"], path, "finetune_studio.compare.base_messages")
        if compare and "base_messages" in compare else None,
        compare_adapter=str(compare.get("adapter", "")) if compare else "",
    )


# ------------------------------------------------------------------------------- what an adapter was taught

TURN_SAMPLE_ROWS = 2000
"""Rows of a run's training data read to count its turns: enough to tell one-turn data from multi-turn data,
few enough to answer at once when a chat reaches its second turn."""


def most_assistant_turns(examples: Any) -> int:
    """The most assistant replies in one of `examples` (normalised rows: {"messages": [...]} or {"text": ...})."""
    most = 0
    for example in examples:
        messages = example.get("messages") if isinstance(example, dict) else None
        if messages:
            most = max(most, sum(1 for message in messages if message.get("role") == "assistant"))
    return most


def trained_turns(adapter_or_run: Path) -> int | None:
    """The most assistant turns in one training conversation of the run that made this adapter.

    Read from the first TURN_SAMPLE_ROWS rows of the run's data; None when that cannot be told (no run folder, the
    data is gone, plain text, a format read otherwise than line by line).
    """
    examples = run_examples(adapter_or_run, TURN_SAMPLE_ROWS)
    return most_assistant_turns(examples or []) or None


def run_examples(adapter_or_run: Path, limit: int) -> list[dict[str, Any]] | None:
    """The first `limit` rows of the data the run that made this adapter (or this run) trained on, normalised
    ({"messages": [...]} or {"text": ...}); None when they cannot be read.

    Read from the run's `run.toml` (its data file, format and column mapping), line by line, so a large file
    costs only its first rows. Bad rows are passed over: they say nothing about the others.
    """
    from studio.core.config.settings import ConfigError, read_toml
    from studio.core.data.issues import DataIssue
    from studio.core.data.loading import read_records
    from studio.core.data.normalise import normalise
    from studio.core.data.shape import (
        detect_format,
        format_from_mapping,
        parse_column_mapping,
    )

    folder = Path(adapter_or_run)
    run_dir = folder if (folder / "run.toml").is_file() else folder.parent
    try:
        data = read_toml(run_dir / "run.toml").get("data", {})  # as written: no check that the model still exists
        mapping = parse_column_mapping(data.get("column_mapping"))
        chosen = data.get("format", "auto")
        examples = []
        for item in read_records(data["train_file"], encoding=data.get("encoding", "utf-8")):
            if isinstance(item, DataIssue):
                continue
            _line, record = item
            try:
                fmt = chosen if chosen != "auto" else format_from_mapping(mapping) or detect_format(record)[0]
                examples.append(normalise(record, fmt, mapping))
            except ValueError:
                continue
            if len(examples) >= limit:
                break
    except (ConfigError, KeyError, OSError, ValueError, LookupError):
        return None
    return examples


def single_turn_warning(adapter_or_run: Path | None, user_turns: int) -> str | None:
    """A hint for the chat's second and later turns when the adapter only ever saw one-turn conversations."""
    if adapter_or_run is None or user_turns < 2:
        return None
    if trained_turns(adapter_or_run) != 1:
        return None
    return ("This adapter was trained on one-turn conversations only, so replies after the first turn may be "
            "poor. Press Clear to ask in a fresh conversation.")
