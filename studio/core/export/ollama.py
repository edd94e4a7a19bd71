"""One chat template, carried into llama.cpp and Ollama.

The Jinja chat template a run trained with is embedded in the GGUF file as it is, minus the
`{% generation %}` markers (a transformers extension that llama.cpp's template engine does not
know; they only mark the assistant's tokens and render nothing).

Ollama wants a Go template instead. Rather than parse Jinja, the template is *measured*: it is
rendered with placeholder messages and the text around each placeholder gives each role's prefix
and suffix, the generation prompt, the BOS text and any default system prompt it inserts. The
measured format is accepted only if it re-renders a set of probe conversations exactly as the Jinja
template does — which holds for the Llama-3 and ChatML families (role header + content + end of
turn). The Go template and the PARAMETER stop tokens (the end-of-turn token(s)) are written from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")

_PLACEHOLDER = "\u2063{}\u2063"  # invisible separators keep placeholders from merging into template text
ROLES = ("system", "user", "assistant")


class TemplateNotConvertible(ValueError):
    """The chat template is not a role-header template that a Go template can reproduce exactly."""


def strip_generation_markers(template: str) -> str:
    """The template without `{% generation %}` / `{% endgeneration %}` (they render nothing)."""
    return _GENERATION_TAG.sub("", template)


@dataclass
class TurnFormat:
    """A role-header chat format: `bos + Σ prefix[role] + content + suffix[role] (+ generation prompt)`."""

    bos: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    default_system: str | None = None
    roles: tuple[str, ...] = field(default=ROLES)

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text = self.bos + "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return text + (self.generation_prompt if add_generation_prompt else "")


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _split(text: str, contents: list[str]) -> list[str]:
    """The template text before, between and after the given contents (which must appear in order)."""
    parts, position = [], 0
    for content in contents:
        found = text.find(content, position)
        if found < 0:
            raise TemplateNotConvertible("the template does not render every message's content verbatim")
        parts.append(text[position:found])
        position = found + len(content)
    parts.append(text[position:])
    return parts


def _probe_conversations() -> list[list[dict[str, str]]]:
    s = {"role": "system", "content": "You answer briefly."}
    u1 = {"role": "user", "content": "What are your hours?"}
    a1 = {"role": "assistant", "content": "Nine to five.\nMonday to Friday."}
    u2 = {"role": "user", "content": "  And on Saturday? "}
    return [[u1], [s, u1], [u1, a1, u2], [s, u1, a1, u2], [s, u1, a1]]


def measure_turn_format(tokenizer: Any) -> TurnFormat:
    """Measure the tokenizer's chat template; raises TemplateNotConvertible unless it is reproduced exactly."""
    ph = {name: _PLACEHOLDER.format(name) for name in ("S", "U1", "A1", "U2")}
    system, user1 = {"role": "system", "content": ph["S"]}, {"role": "user", "content": ph["U1"]}
    assistant1, user2 = {"role": "assistant", "content": ph["A1"]}, {"role": "user", "content": ph["U2"]}
    try:
        with_prompt = _render(tokenizer, [user1], True)
        without = _render(tokenizer, [user1], False)
        full = _render(tokenizer, [system, user1, assistant1, user2], False)
        user_only = _render(tokenizer, [user1], False)
    except Exception as error:  # a template that raises on some role order (e.g. strict alternation)
        raise TemplateNotConvertible(f"the template cannot render a system/user/assistant conversation: {error}") \
            from None
    if not with_prompt.startswith(without):
        raise TemplateNotConvertible("the generation prompt is not appended after the conversation")
    generation_prompt = with_prompt[len(without):]
    if "assistant" not in generation_prompt:
        raise TemplateNotConvertible("the generation prompt does not name the assistant role")
    prefix = {role: generation_prompt.replace("assistant", role) for role in ROLES}
    p0, p1, p2, p3, p4 = _split(full, [ph["S"], ph["U1"], ph["A1"], ph["U2"]])
    suffix_user = p4
    if p2 != suffix_user + prefix["assistant"]:
        raise TemplateNotConvertible("the text between a user turn and the assistant's reply is not "
                                     "end-of-turn + assistant header")
    for part, what in ((p0, "system"), (p1, "user"), (p3, "user")):
        if not part.endswith(prefix[what]):
            raise TemplateNotConvertible(f"the {what} header is not the assistant header with the role renamed")
    fmt = TurnFormat(
        bos=p0[: len(p0) - len(prefix["system"])],
        prefix=prefix,
        suffix={"system": p1[: len(p1) - len(prefix["user"])], "user": suffix_user,
                "assistant": p3[: len(p3) - len(prefix["user"])]},
        generation_prompt=generation_prompt,
    )
    if fmt.render([user1]) != user_only:
        # Some templates (Qwen 2.5) insert a default system prompt when the conversation has none.
        head = fmt.bos + fmt.prefix["system"]
        tail = fmt.suffix["system"] + fmt.prefix["user"] + ph["U1"] + fmt.suffix["user"]
        if user_only.startswith(head) and user_only.endswith(tail) and len(user_only) >= len(head) + len(tail):
            fmt.default_system = user_only[len(head): len(user_only) - len(tail)]
    for conversation in _probe_conversations():
        for add_prompt in (False, True):
            if fmt.render(conversation, add_generation_prompt=add_prompt) != _render(tokenizer, conversation,
                                                                                      add_prompt):
                raise TemplateNotConvertible("the measured format does not reproduce the template on a probe "
                                             "conversation (the template does more than role headers)")
    return fmt


def _go_literal(text: str) -> str:
    """Template text with trailing whitespace as a Go string constant, so `{{-` after it cannot trim it."""
    stripped = text.rstrip()
    trailing = text[len(stripped):]
    if "{{" in stripped:
        stripped = stripped.replace("{{", '{{ "{{" }}')
    return stripped + (f"{{{{ {json.dumps(trailing)} }}}}" if trailing else "")


def go_template(fmt: TurnFormat, *, include_bos: bool) -> str:
    """An Ollama TEMPLATE (Go text/template over .Messages) that renders prompts exactly like `fmt`.

    As in Ollama's own templates, a final assistant message is left open (no end-of-turn), so a
    reply can be continued. BOS is left to the tokenizer unless `include_bos`.
    """
    lines = [_go_literal(fmt.bos) if include_bos and fmt.bos else ""]
    lines[0] += "{{- range $i, $_ := .Messages }}"
    lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
    keyword = "if"
    for role in ("system", "user"):
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}{_go_literal(fmt.prefix[role])}{{{{ .Content }}}}'
                     f"{_go_literal(fmt.suffix[role])}")
        keyword = "else if"
    lines.append(f"{{{{- if $last }}}}{_go_literal(fmt.generation_prompt)}")
    lines.append("{{- end }}")
    lines.append(f'{{{{- else if eq .Role "assistant" }}}}{_go_literal(fmt.prefix["assistant"])}{{{{ .Content }}}}')
    lines.append(f"{{{{- if not $last }}}}{_go_literal(fmt.suffix['assistant'])}")
    lines.append("{{- end }}")
    lines.append("{{- end }}")
    lines.append("{{- end }}")
    return "\n".join(lines)


def stop_tokens(fmt: TurnFormat, tokenizer: Any) -> list[str]:
    """The special token(s) that end an assistant turn (e.g. <|eot_id|>, <|im_end|>)."""
    specials = [t for t in getattr(tokenizer, "all_special_tokens", [])]
    specials += [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    ending = fmt.suffix["assistant"]
    found = sorted({t for t in specials if t and t in ending}, key=ending.index)
    if not found and ending.strip():
        found = [ending.strip()]  # an end-of-turn marker that is plain text in this vocabulary
    if not found and tokenizer.eos_token:
        found = [tokenizer.eos_token]
    return found


def modelfile_text(gguf_name: str, *, template: str | None, stops: list[str], system: str | None = None,
                   notes: list[str] = (), modelfile: str = "Modelfile", num_ctx: int | None = None) -> str:
    """An Ollama Modelfile for the GGUF file beside it; `modelfile` is its own file name (NAME.Modelfile).
    `num_ctx`: the context the export's type was sized for (plan.gguf_fit), so Ollama runs what was sized rather
    than its own default."""
    lines = ["# Ollama Modelfile written by Finetune Studio.",
             f"# Create the model with:  ollama create my-model -f {modelfile}"]
    lines += [f"# {note}" for note in notes]
    lines += [f"FROM ./{gguf_name}", ""]
    if template is not None:
        lines += [f'TEMPLATE """{template}"""', ""]
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    return "\n".join(lines) + "\n"
