"""Tool calls in a reply, in the forms models are trained to write, and the score of one reply's calls.

Forms read (in the order they appear in the text):
- `<tool_code>get_bill({"phone": "05321234567"})</tool_code>`: a call with one JSON object, or with keyword
  arguments (`get_bill(phone="0532…")`, Gemma's `print(default_api.get_bill(...))` included), also in a
  ```tool_code fence;
- `<tool_call>{"name": "get_bill", "arguments": {...}}</tool_call>` as Qwen and Hermes templates write it;
- a bare JSON object with name and arguments (or parameters), OpenAI's `{"function": {"name", "arguments"}}`
  items, or a list of them: what the data reader makes of an OpenAI `tool_calls` field
  (studio.core.data.normalise keeps it as JSON text), and what `expected_tool_calls` reads from a message.

A call whose arguments do not parse is still a call (valid is False): a reply cut off mid-JSON is a
scored failure, not an exception.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from studio.core.metrics.result import MetricResult

_TAGGED = re.compile(r"<(tool_code|tool_call)>(.*?)(?:</\1>|\Z)|```tool_code[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CALL = re.compile(r"\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*;?\s*\Z", re.DOTALL)
_CALL_START = re.compile(r"\s*([A-Za-z_][\w.]*)\s*\(")
_NAME_FIELD = re.compile(r'\{\s*"name"\s*:\s*"([^"]+)"')


@dataclass(frozen=True)
class ToolCall:
    """One call as written: the function's name, its arguments (None when they did not parse) and where."""

    name: str | None
    arguments: dict[str, Any] | None
    form: str
    """"tool_code", "tool_call", "json" or "openai"."""
    valid: bool = True
    """The arguments parse (JSON, or Python literals in a keyword-argument call)."""
    error: str = ""
    start: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arguments": self.arguments, "form": self.form, "valid": self.valid}
        if self.error:
            out["error"] = self.error
        return out


# --------------------------------------------------------------------------------------- extraction


def extract_tool_calls(text: str) -> list[ToolCall]:
    """Every tool call in `text`, in order of appearance."""
    calls: list[ToolCall] = []
    outside: list[str] = []
    last = 0
    for match in _TAGGED.finditer(text):
        outside.append(text[last:match.start()] + " " * (match.end() - match.start()))
        last = match.end()
        if match.group(1) == "tool_call":
            calls += _json_calls(match.group(2), "tool_call", match.start())
        else:
            body = match.group(2) if match.group(1) else match.group(3)
            calls.append(_code_call(body, match.start()))
    outside.append(text[last:])
    calls += _bare_json_calls("".join(outside))
    return sorted(calls, key=lambda call: call.start)


def expected_tool_calls(expected: str | Mapping[str, Any]) -> list[ToolCall]:
    """The calls an expected reply makes: its text, or a message with an OpenAI `tool_calls` field."""
    if isinstance(expected, Mapping):
        calls = [_openai_call(item, 0) for item in expected.get("tool_calls") or []]
        content = expected.get("content")
        return [c for c in calls if c is not None] + (extract_tool_calls(content) if isinstance(content, str) else [])
    return extract_tool_calls(expected)


def _code_call(body: str, start: int) -> ToolCall:
    match = _CALL.match(body)
    if match is None:
        opened = _CALL_START.match(body)
        name = _short_name(opened.group(1)) if opened else None
        return ToolCall(name, None, "tool_code", valid=False, start=start,
                        error="the call is not closed" if opened else "not a function call")
    name, inner = match.group(1), match.group(2).strip()
    if name == "print" and _CALL.match(inner):  # Gemma writes print(default_api.name(...))
        return _code_call(inner, start)
    name = _short_name(name)
    if not inner:
        return ToolCall(name, {}, "tool_code", start=start)
    if inner.startswith("{"):
        try:
            value = json.loads(inner)
        except json.JSONDecodeError as error:
            return ToolCall(name, None, "tool_code", valid=False, start=start, error=f"not valid JSON: {error}")
        if not isinstance(value, dict):
            return ToolCall(name, None, "tool_code", valid=False, start=start, error="the arguments are not an object")
        return ToolCall(name, value, "tool_code", start=start)
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args and all(k.arg for k in call.keywords)
        arguments = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, AssertionError, TypeError) as error:
        return ToolCall(name, None, "tool_code", valid=False, start=start,
                        error=f"arguments do not parse: {type(error).__name__}")
    return ToolCall(name, arguments, "tool_code", start=start)


def _short_name(name: str) -> str:
    """`default_api.get_bill` and `functions.get_bill` name the function get_bill."""
    return name.rsplit(".", 1)[-1]


def _json_calls(body: str, form: str, start: int) -> list[ToolCall]:
    try:
        value = json.loads(body.strip())
    except json.JSONDecodeError as error:
        named = _NAME_FIELD.search(body)
        return [ToolCall(named.group(1) if named else None, None, form, valid=False, start=start,
                         error=f"not valid JSON: {error}")]
    items = value if isinstance(value, list) else [value]
    calls = [_call_from_object(item, form, start) for item in items]
    if not any(calls):
        return [ToolCall(None, None, form, valid=False, start=start, error="no name and arguments in the call")]
    return [call for call in calls if call is not None]


def _call_from_object(item: Any, form: str, start: int) -> ToolCall | None:
    """A call from {"name", "arguments"|"parameters"} or OpenAI's {"function": {...}}; None if neither."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):
        return _openai_call(item, start)
    if not isinstance(item.get("name"), str) or not ("arguments" in item or "parameters" in item):
        return None
    return _with_arguments(item["name"], item.get("arguments", item.get("parameters")), form, start)


def _openai_call(item: Any, start: int) -> ToolCall | None:
    function = item.get("function") if isinstance(item, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    return _with_arguments(function["name"], function.get("arguments", {}), "openai", start)


def _with_arguments(name: str, arguments: Any, form: str, start: int) -> ToolCall:
    if isinstance(arguments, str):  # OpenAI sends the arguments as JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            return ToolCall(name, None, form, valid=False, start=start, error=f"arguments are not valid JSON: {error}")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ToolCall(name, None, form, valid=False, start=start, error="the arguments are not an object")
    return ToolCall(name, arguments, form, start=start)


def _bare_json_calls(text: str) -> list[ToolCall]:
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = 0
    while (found := _next_open(text, position)) >= 0:
        try:
            value, end = decoder.raw_decode(text, found)
        except json.JSONDecodeError as error:
            named = _NAME_FIELD.match(text, found)
            if named is None:
                position = found + 1
                continue
            # A call-shaped object that does not parse (cut off, or a stray quote): a call, not valid.
            calls.append(ToolCall(named.group(1), None, "json", valid=False, start=found,
                                  error=f"not valid JSON: {error}"))
            position = named.end()
            continue
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
            items = value["tool_calls"]
        for item in items:
            call = _call_from_object(item, "json", found)
            if call is not None:
                calls.append(call)
        position = end
    return calls


def _next_open(text: str, position: int) -> int:
    braces = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
    return min(braces) if braces else -1


# --------------------------------------------------------------------------------------- scoring


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values: key order does not count, 1 and 1.0 are equal, true and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@dataclass
class CallComparison:
    """One expected call beside the reply's call paired with it (None: the reply made no such call)."""

    expected: ToolCall
    got: ToolCall | None
    arguments: list[dict[str, Any]] = field(default_factory=list)
    """Per argument: {"name", "status": ok|missing|extra|wrong, "expected", "got"} (missing/extra lack one)."""

    @property
    def right_function(self) -> bool:
        return self.got is not None and self.got.name == self.expected.name

    @property
    def valid(self) -> bool:
        return self.got is not None and self.got.valid

    @property
    def arguments_right(self) -> bool:
        return self.valid and all(a["status"] == "ok" for a in self.arguments)

    @property
    def score(self) -> float:
        """Right function and valid JSON a quarter each, the arguments half (the share of them right)."""
        if self.got is None:
            return 0.0
        if not self.valid:
            return 0.25 * self.right_function
        share = (sum(a["status"] == "ok" for a in self.arguments) / len(self.arguments)) if self.arguments else 1.0
        return 0.25 * self.right_function + 0.25 + 0.5 * share

    def problem(self) -> str:
        """The first thing wrong, in words; empty when the call is right."""
        want = self.expected.name
        if self.got is None:
            return f"no call to {want}"
        if not self.right_function:
            return f"called {self.got.name}, expected {want}"
        if not self.valid:
            return f"{want}: {self.got.error or 'arguments do not parse'}"
        for argument in self.arguments:
            name, status = argument["name"], argument["status"]
            if status == "missing":
                return f"{want}: missing argument {name}"
            if status == "extra":
                return f"{want}: extra argument {name}"
            if status == "wrong":
                return (f"{want}: argument {name} is {json.dumps(argument['got'], ensure_ascii=False)}, expected "
                        f"{json.dumps(argument['expected'], ensure_ascii=False)}")
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"expected": self.expected.to_dict(), "got": self.got.to_dict() if self.got else None,
                "right_function": self.right_function, "valid_json": self.valid,
                "arguments_right": self.arguments_right, "arguments": self.arguments}


def argument_differences(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each argument of either side, in the expected call's order then the extra ones, with its status."""
    rows: list[dict[str, Any]] = []
    for name, want in expected.items():
        if name not in got:
            rows.append({"name": name, "status": "missing", "expected": want})
        else:
            status = "ok" if json_equal(want, got[name]) else "wrong"
            rows.append({"name": name, "status": status, "expected": want, "got": got[name]})
    rows += [{"name": name, "status": "extra", "got": value} for name, value in got.items() if name not in expected]
    return rows


def compare_calls(expected: list[ToolCall], got: list[ToolCall]) -> tuple[list[CallComparison], list[ToolCall]]:
    """Pair each expected call with the reply's first unpaired call of the same name (else its first unpaired
    call); returns the pairs and the reply's calls left over."""
    left = list(got)
    pairs = []
    for want in expected:
        match = next((call for call in left if call.name == want.name), left[0] if left else None)
        if match is not None:
            left.remove(match)
        comparison = CallComparison(want, match)
        if match is not None and match.valid and match.arguments is not None:
            comparison.arguments = argument_differences(want.arguments or {}, match.arguments)
        pairs.append(comparison)
    return pairs, left


def cases_expecting_a_call(parts: Mapping[str, Mapping[str, int]] | None) -> int | None:
    """How many scored cases expect a call, from a summary's counts of tool_call's checks (`parts`: each check's
    passed/total); None when these are not tool_call's. A case that expects no call passes by making none, so a
    "10/10" says a call was learned only for this many of the ten: summaries and charts show it beside the score."""
    if not parts or not ({"call_present", "no_call_expected"} & set(parts)):
        return None
    return int((parts.get("call_present") or {}).get("total", 0))


def tool_call_match(reply: str, expected: str | Mapping[str, Any]) -> MetricResult:
    """Passed when the reply makes exactly the expected calls: the same functions, every argument JSON-equal
    (key order ignored), valid JSON, nothing extra. The score gives partial credit per call; `detail` has the
    four checks (call present, right function, arguments right, valid JSON) and each argument's difference."""
    want = expected_tool_calls(expected)
    got = extract_tool_calls(reply)
    if not want:
        passed = not got
        detail: dict[str, Any] = {"expected": [], "got": [c.to_dict() for c in got],
                                  "parts": {"no_call_expected": passed}}
        if not passed:
            detail["reason"] = f"expected no tool call, the reply makes {len(got)}"
        return MetricResult(passed, 1.0 if passed else 0.0, detail)
    pairs, extra = compare_calls(want, got)
    parts = {
        "call_present": bool(got),
        "right_function": all(p.right_function for p in pairs),
        "arguments_right": all(p.arguments_right for p in pairs),
        "valid_json": bool(got) and all(c.valid for c in got),
    }
    passed = all(parts.values()) and not extra
    score = sum(p.score for p in pairs) / max(len(want), len(got))
    detail = {"calls": [p.to_dict() for p in pairs], "extra_calls": [c.to_dict() for c in extra], "parts": parts}
    if not passed:
        if not got:
            detail["reason"] = "no tool call in the reply"
        else:
            detail["reason"] = next((p.problem() for p in pairs if p.problem()), "") or \
                f"extra call: {', '.join(str(c.name) for c in extra)}"
    return MetricResult(passed, score, detail)
