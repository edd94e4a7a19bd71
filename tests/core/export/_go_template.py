"""A small evaluator for the subset of Go's text/template that Ollama Modelfile templates use.

Enough to render the TEMPLATE the studio writes (range over .Messages, if / else if / end,
eq / not / len / slice, variables, string constants, `{{-` / `-}}` trimming) so a test can check
that Ollama would build the same prompt as the Jinja chat template — without Go or Ollama.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


def _lex(template: str) -> list[tuple[str, str]]:
    """[('text', ...) | ('action', ...)] with trim markers applied to the neighbouring text."""
    items: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in _ACTION.finditer(template):
        text = template[position:match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        items.append(("text", text))
        items.append(("action", match.group(2).strip()))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = template[position:]
    items.append(("text", tail.lstrip() if trim_next else tail))
    return items


def _tokens(expression: str) -> list[str]:
    return re.findall(r'"(?:\\.|[^"\\])*"|\(|\)|[^\s()]+', expression)


def _evaluate(tokens: list[str], scope: dict[str, Any], dot: Any) -> Any:
    def atom(position: int) -> tuple[Any, int]:
        token = tokens[position]
        if token == "(":
            value, position = call(position + 1)
            return value, position + 1  # skip ")"
        if token.startswith('"'):
            return json.loads(token), position + 1
        if token.lstrip("-").isdigit():
            return int(token), position + 1
        if token.startswith("$."):
            return scope["$"][token[2:]], position + 1
        if token.startswith("$"):
            return scope[token], position + 1
        if token.startswith("."):
            return dot[token[1:]], position + 1
        raise ValueError(f"unknown token {token!r}")

    def call(position: int) -> tuple[Any, int]:
        name = tokens[position]
        functions = {"eq": lambda a, b: a == b, "not": lambda a: not a, "len": len,
                     "slice": lambda seq, start: seq[start:]}
        if name in functions:
            args, position = [], position + 1
            while position < len(tokens) and tokens[position] != ")":
                value, position = atom(position)
                args.append(value)
            return functions[name](*args), position
        return atom(position)

    value, _ = call(0)
    return value


def render(template: str, data: dict[str, Any]) -> str:
    items = _lex(template)
    out: list[str] = []

    def block(index: int, scope: dict[str, Any], dot: Any, emit: bool) -> tuple[int, str]:
        """Run items from `index` until an end/else at this level; returns (index of it, its keyword)."""
        while index < len(items):
            kind, value = items[index]
            if kind == "text":
                if emit:
                    out.append(value)
                index += 1
                continue
            words = value.split()
            if words[0] in ("end", "else"):
                return index, value
            if words[0] == "range":
                match = re.fullmatch(r"range\s+(\$\w+),\s*(\$\w+)\s*:=\s*(.+)", value)
                sequence = _evaluate(_tokens(match.group(3)), scope, dot)
                body = index + 1
                end = body
                for i, element in enumerate(sequence if emit else []):
                    inner = dict(scope, **{match.group(1): i, match.group(2): element})
                    end, _ = block(body, inner, element, True)
                if not emit or not sequence:
                    end, _ = block(body, scope, dot, False)
                index = end + 1
                continue
            if words[0] == "if":
                taken = emit and bool(_evaluate(_tokens(value[2:]), scope, dot))
                done = taken
                index, keyword = block(index + 1, scope, dot, taken)
                while keyword.startswith("else"):
                    condition = keyword[4:].strip()
                    if condition.startswith("if "):
                        taken = emit and not done and bool(_evaluate(_tokens(condition[3:]), scope, dot))
                    else:
                        taken = emit and not done
                    done = done or taken
                    index, keyword = block(index + 1, scope, dot, taken)
                index += 1
                continue
            assignment = re.fullmatch(r"(\$\w+)\s*:=\s*(.+)", value)
            if assignment:
                if emit:
                    scope[assignment.group(1)] = _evaluate(_tokens(assignment.group(2)), scope, dot)
                index += 1
                continue
            if emit:
                out.append(str(_evaluate(_tokens(value), scope, dot)))
            index += 1
        return index, ""

    block(0, {"$": data}, data, True)
    return "".join(out)
