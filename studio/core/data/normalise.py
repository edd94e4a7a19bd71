"""One chat form for every record shape: `normalise(record, fmt, mapping)` turns an OpenAI messages record, a
ShareGPT conversation, Alpaca, prompt/completion or plain text into `{"messages": [...]}` or `{"text": ...}`, with
role names mapped and each problem raised as a reason the caller reports as `file:line: reason`; the preference
shapes (chosen/rejected, completion/label, prompt only) likewise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from studio.core.data.shape import FORMATS
from studio.core.data.sources import (
    TOO_DEEP,
)

ROLES = ("system", "user", "assistant", "tool")
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                "tool": "tool", "function": "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}
_ANY_ROLES = {**SHAREGPT_ROLES, **OPENAI_ROLES}


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


def normalise_preference(record: Any, fmt: str) -> list[dict[str, Any]]:
    """One record of a method beyond SFT (its columns already mapped) in TRL's conversational form; ValueError
    with the reason. Usually one example; a chosen/rejected pair read for kto gives two.

    preference → {"prompt": turns, "chosen": [reply], "rejected": [reply]}; unpaired_preference →
    {"prompt": turns, "completion": [reply], "label": bool}; prompt_only and the SFT shapes (for grpo) →
    {"prompt": turns, "expected": text} ("" when the record has no expected reply).
    """
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "preference":
        prompt, chosen, rejected = _pair(record)
        if chosen == rejected:
            raise ValueError("'chosen' and 'rejected' are identical: there is nothing to prefer")
        return [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]
    if fmt == "unpaired_preference":
        prompt = _prompt_turns(record)
        completion = _reply_turns(record.get("completion"), "completion", present="completion" in record)
        return [{"prompt": prompt, "completion": completion, "label": _label(record.get("label"))}]
    if fmt == "prompt_only":
        expected = record.get("completion")
        if isinstance(expected, list):
            expected = _reply_turns(expected, "completion")[-1]["content"]
        elif expected is not None and not isinstance(expected, str):
            raise ValueError(f"'completion' must be a string, got {type(expected).__name__}")
        return [{"prompt": _prompt_turns(record), "expected": expected or ""}]
    if fmt in FORMATS:  # an SFT record for grpo: the conversation up to its last reply, which is the expected one
        example = normalise(record, fmt)
        if "messages" not in example:
            raise ValueError("plain text has no prompt to generate from")
        turns = example["messages"]
        last = max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")
        if not any(turn["role"] == "user" for turn in turns[:last]):
            raise ValueError("no user turn before the last reply: nothing to prompt with")
        return [{"prompt": turns[:last], "expected": turns[last]["content"]}]
    raise ValueError(f"unknown format '{fmt}'")


def unpair(example: dict[str, Any]) -> list[dict[str, Any]]:
    """A normalised pair as kto's two unpaired examples: the chosen reply desirable, the rejected one not."""
    return [{"prompt": example["prompt"], "completion": example["chosen"], "label": True},
            {"prompt": example["prompt"], "completion": example["rejected"], "label": False}]


def _prompt_turns(record: dict[str, Any]) -> list[dict[str, str]]:
    if "prompt" not in record:
        raise ValueError("'prompt' is missing")
    prompt = record["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("'prompt' is empty")
        turns = [{"role": "user", "content": prompt}]
    else:
        turns = _normalise_turns(prompt, "prompt", OPENAI_ROLES, need_reply=False)
        if turns[-1]["role"] == "assistant":
            raise ValueError("'prompt' ends with an assistant turn: the reply to learn must come after it")
    return _with_system(turns, record.get("system"), "'system'", "system" in record)


def _reply_turns(value: Any, key: str, *, present: bool = True) -> list[dict[str, str]]:
    """A reply: a string, or a list of turns ending with the assistant's (TRL's conversational form)."""
    if not present:
        raise ValueError(f"'{key}' is missing")
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"'{key}' is empty")
        return [{"role": "assistant", "content": value}]
    turns = _normalise_turns(value, key, OPENAI_ROLES)
    if turns[-1]["role"] != "assistant":
        raise ValueError(f"'{key}' must end with an assistant turn")
    return turns


def _pair(record: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, chosen, rejected); without a prompt, chosen and rejected are whole conversations and their
    common first turns are the prompt (TRL's implicit prompt)."""
    chosen = _reply_turns(record.get("chosen"), "chosen", present="chosen" in record)
    rejected = _reply_turns(record.get("rejected"), "rejected", present="rejected" in record)
    if "prompt" in record:
        return _prompt_turns(record), chosen, rejected
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0 or not any(turn["role"] == "user" for turn in chosen[:shared]):
        raise ValueError("'prompt' is missing, and 'chosen' and 'rejected' share no first turns to take it from")
    return _with_system(chosen[:shared], record.get("system"), "'system'", "system" in record), \
        chosen[shared:], rejected[shared:]


_TRUE = {"true", "1", "yes", "desirable", "good"}
_FALSE = {"false", "0", "no", "undesirable", "bad"}


def _label(value: Any) -> bool:
    """kto's label: a boolean, 0/1, or its text (a CSV cell)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if value is None:
        raise ValueError("'label' is missing")
    raise ValueError(f"'label' must be true or false (or 1/0), got {value!r}")


def _normalise_turns(turns: Any, key: str, role_map: dict[str, str], *,
                     need_reply: bool = True) -> list[dict[str, str]]:
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
    if need_reply and not learns:
        raise ValueError(f"'{key}' has no assistant turn to learn from")
    return messages
