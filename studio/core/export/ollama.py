"""One chat template, carried into llama.cpp and Ollama.

The Jinja chat template a run trained with is embedded in the GGUF file as it is, minus the
`{% generation %}` markers (a transformers extension that llama.cpp's template engine does not
know; they only mark the assistant's tokens and render nothing).

Ollama wants a Go template instead. Rather than parse Jinja, the template is *measured*: it is
rendered with placeholder messages and the text around each placeholder gives each role's prefix
and suffix, the generation prompt, the BOS text, a default system prompt it inserts, whether it folds
the system prompt into the first user turn (Gemma) or drops it (Mistral v0.1), and how it writes a
tool result (Llama 3.1's `ipython` header, ChatML's `tool` turn). The measured format is accepted only
if it re-renders probe conversations — and, at export, the run's own conversations — exactly as the
Jinja template does. The Go template and the PARAMETER stop tokens are written from it, and the tests
render that Go template with Go's own text/template.

Tool calls are trained as text in the assistant's reply (`core.data.normalise`), so the template needs
no `.ToolCalls`: the fine-tuned model writes its call and the caller reads it from the reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")

_PLACEHOLDER = "\u2063{}\u2063"  # invisible separators keep placeholders from merging into template text
ROLES = ("system", "user", "assistant", "tool")


class TemplateNotConvertible(ValueError):
    """The chat template is not a turn template that a Go template can reproduce exactly."""


def strip_generation_markers(template: str) -> str:
    """The template without `{% generation %}` / `{% endgeneration %}` (they render nothing)."""
    return _GENERATION_TAG.sub("", template)


@dataclass
class TurnFormat:
    """A turn-by-turn chat format: `bos + Σ prefix[role] + content + suffix[role] (+ generation prompt)`.

    `system_joiner` set: the system prompt is not a turn of its own but opens the first user turn
    (`prefix[user] + system + joiner + content`), as Gemma's template does. A role in `dropped` is not
    rendered at all; a role missing from `prefix` (and not dropped) cannot be rendered: a conversation with
    it is refused.
    """

    bos: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    default_system: str | None = None
    system_joiner: str | None = None
    dropped: tuple[str, ...] = ()
    trims_content: bool = False
    """The template strips spaces around each message (Gemma's `| trim`); Go's text/template has no trim, so the
    Modelfile sends a message as written and the two differ only for a message with spaces around it."""
    notes: list[str] = field(default_factory=list)
    roles: tuple[str, ...] = field(default=ROLES)

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text, pending_system = self.bos, None
        for message in messages:
            role, content = message["role"], message["content"]
            if role in self.dropped:
                continue
            if role == "system" and self.system_joiner is not None:
                pending_system = content
                continue
            if role not in self.prefix:
                raise TemplateNotConvertible(f"the template does not render a {role!r} turn")
            if role == "user" and pending_system is not None:
                content, pending_system = pending_system + self.system_joiner + content, None
            text += self.prefix[role] + content + self.suffix[role]
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


def _tool_probes() -> list[list[dict[str, str]]]:
    u = {"role": "user", "content": "Faturamı öğrenmek istiyorum, numaram 05321234567."}
    call = {"role": "assistant", "content": '<tool_code>{"name": "get_bill", "arguments": {"phone": "05321234567"}}'
                                            "</tool_code>"}
    result = {"role": "tool", "content": '{"amount": "1.250,50 TL"}'}
    answer = {"role": "assistant", "content": "Faturanız 1.250,50 TL."}
    return [[u, call, result], [u, call, result, answer], [u, call, result, answer, u]]


def _special_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Where the tokenizer's special tokens stand in `text`: a measured boundary never cuts one in two."""
    specials = {t for t in getattr(tokenizer, "all_special_tokens", []) if t}
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special and t.content}
    spans = []
    for token in specials:
        start = text.find(token)
        while start >= 0:
            spans.append((start, start + len(token)))
            start = text.find(token, start + 1)
    return spans


def _common_suffix(tokenizer: Any, *texts: str) -> str:
    """The longest common ending of `texts` whose start cuts no special token in any of them.

    Without the special-token rule `<s>[INST] ` and `</s>[INST] ` would share `s>[INST] `, leaving `</` as the
    assistant's end of turn and as a stop string.
    """
    length = 0
    while all(length < len(t) for t in texts) and len({t[len(t) - length - 1] for t in texts}) == 1:
        length += 1
    while length > 0:
        cuts = [len(t) - length for t in texts]
        if not any(a < cut < b for t, cut in zip(texts, cuts) for a, b in _special_spans(tokenizer, t)):
            break
        length -= 1
    return texts[0][len(texts[0]) - length:] if length else ""


def _user_prefix(tokenizer: Any, after_bos: str, assistant_to_user: str, generation_prompt: str) -> str:
    """The text that opens a user turn: what the first turn (after BOS and any default system turn) and a turn after
    a reply both end with. A role-header template names the assistant (or Gemma's `model`) in its generation prompt,
    and the user's header is that prompt with the role renamed; otherwise (Mistral's `[INST] `) it is the longest
    ending both share that cuts no special token."""
    for role_word in ("assistant", "model"):
        if role_word in generation_prompt:
            header = generation_prompt.replace(role_word, "user")
            if after_bos.endswith(header) and assistant_to_user.endswith(header):
                return header
    return _common_suffix(tokenizer, after_bos, assistant_to_user)


def _measure_tool(tokenizer: Any, fmt: TurnFormat, ph: dict[str, str]) -> None:
    """The tool role's prefix and suffix, measured between an assistant's call and its next reply; left out of
    `fmt` where the template cannot render a tool turn (it then refuses conversations that have one)."""
    user, call = {"role": "user", "content": ph["U1"]}, {"role": "assistant", "content": ph["A1"]}
    result, answer = {"role": "tool", "content": ph["T1"]}, {"role": "assistant", "content": ph["A2"]}
    try:
        text = _render(tokenizer, [user, call, result, answer], False)
    except Exception:  # a template that allows no tool turn (strict user/assistant alternation)
        return
    if ph["T1"] not in text:
        if text == _render(tokenizer, [user, call, answer], False):
            fmt.dropped += ("tool",)
        return
    parts = _split(text, [ph["U1"], ph["A1"], ph["T1"], ph["A2"]])
    between_call_and_result, between_result_and_answer = parts[2], parts[3]
    if not between_call_and_result.startswith(fmt.suffix["assistant"]):
        return
    if not between_result_and_answer.endswith(fmt.prefix["assistant"]):
        return
    fmt.prefix["tool"] = between_call_and_result[len(fmt.suffix["assistant"]):]
    cut = len(between_result_and_answer) - len(fmt.prefix["assistant"])
    fmt.suffix["tool"] = between_result_and_answer[:cut]


def measure_turn_format(tokenizer: Any, conversations: list[list[dict[str, str]]] = ()) -> TurnFormat:
    """Measure the tokenizer's chat template; raises TemplateNotConvertible unless the measured format reproduces it
    exactly on the probe conversations and on `conversations` (the run's own, at export)."""
    ph = {name: _PLACEHOLDER.format(name) for name in ("S", "U1", "A1", "U2", "T1", "A2")}
    user1 = {"role": "user", "content": ph["U1"]}
    assistant1, user2 = {"role": "assistant", "content": ph["A1"]}, {"role": "user", "content": ph["U2"]}
    try:
        with_prompt = _render(tokenizer, [user1], True)
        without = _render(tokenizer, [user1], False)
        turns = _render(tokenizer, [user1, assistant1, user2], False)
    except Exception as error:
        raise TemplateNotConvertible(f"the template cannot render a user/assistant conversation: {error}") from None
    if not with_prompt.startswith(without):
        raise TemplateNotConvertible("the generation prompt is not appended after the conversation")
    generation_prompt = with_prompt[len(without):]
    opening, user_to_assistant, assistant_to_user, user_end = _split(turns, [ph["U1"], ph["A1"], ph["U2"]])
    if not user_to_assistant.startswith(user_end):
        raise TemplateNotConvertible("a user turn does not end the same way before a reply as at the end")
    bos_token = getattr(tokenizer, "bos_token", None) or ""
    bos = bos_token if bos_token and opening.startswith(bos_token) else ""
    user_prefix = _user_prefix(tokenizer, opening[len(bos):], assistant_to_user, generation_prompt)
    fmt = TurnFormat(
        bos=bos,
        prefix={"user": user_prefix, "assistant": user_to_assistant[len(user_end):]},
        suffix={"user": user_end, "assistant": assistant_to_user[: len(assistant_to_user) - len(user_prefix)]},
        generation_prompt=generation_prompt,
    )
    padded = _render(tokenizer, [{"role": "user", "content": f"  {ph['U1']} "}], False)
    fmt.trims_content = f"  {ph['U1']} " not in padded and ph["U1"] in padded
    _measure_system(tokenizer, fmt, ph, without)
    _measure_tool(tokenizer, fmt, ph)
    _check(tokenizer, fmt, _probe_conversations(), "a probe conversation")
    if "tool" in fmt.prefix:
        _check(tokenizer, fmt, _tool_probes(), "a probe conversation with a tool result")
    _check(tokenizer, fmt, list(conversations), "the run's conversation")
    padded_conversations = sum(any(m["content"] != m["content"].strip() for m in c) for c in conversations)
    if fmt.trims_content and padded_conversations:
        fmt.notes.append(f"The chat template strips spaces around each message and Ollama's template cannot: "
                         f"{padded_conversations} of the run's conversations checked have a message with such "
                         "spaces, which Ollama sends as written.")
    return fmt


def _measure_system(tokenizer: Any, fmt: TurnFormat, ph: dict[str, str], user_only: str) -> None:
    """The system turn: a turn of its own (with its header), folded into the first user turn, or dropped; and the
    default system prompt a template inserts when a conversation has none (Qwen 2.5)."""
    system, user1 = {"role": "system", "content": ph["S"]}, {"role": "user", "content": ph["U1"]}
    try:
        with_system = _render(tokenizer, [system, user1], False)
    except Exception as error:
        raise TemplateNotConvertible(f"the template cannot render a system prompt: {error}") from None
    if ph["S"] not in with_system:
        fmt.dropped += ("system",)
        return
    before, between, _after = _split(with_system, [ph["S"], ph["U1"]])
    if before == fmt.bos + fmt.prefix["user"]:
        fmt.system_joiner = between  # Gemma: "<start_of_turn>user\n" + system + "\n\n" + user
    elif before.startswith(fmt.bos) and between.endswith(fmt.prefix["user"]):
        fmt.prefix["system"] = before[len(fmt.bos):]
        fmt.suffix["system"] = between[: len(between) - len(fmt.prefix["user"])]
    else:
        raise TemplateNotConvertible("the system prompt is neither a turn of its own nor the start of the first "
                                     "user turn")
    if fmt.render([user1]) != user_only and "system" in fmt.prefix:
        # Some templates (Qwen 2.5) insert a default system prompt when the conversation has none.
        head = fmt.bos + fmt.prefix["system"]
        tail = fmt.suffix["system"] + fmt.prefix["user"] + ph["U1"] + fmt.suffix["user"]
        if user_only.startswith(head) and user_only.endswith(tail) and len(user_only) >= len(head) + len(tail):
            fmt.default_system = user_only[len(head): len(user_only) - len(tail)]


def _check(tokenizer: Any, fmt: TurnFormat, conversations: list[list[dict[str, str]]], what: str) -> None:
    """Refuse the format unless it renders every conversation (with and without the generation prompt) exactly
    as the template does, naming the first that differs and where."""
    for number, conversation in enumerate(conversations, 1):
        if fmt.trims_content:  # compared as the template sees them (see TurnFormat.trims_content)
            conversation = [{**m, "content": m["content"].strip()} for m in conversation]
        for add_prompt in (False, True):
            try:
                expected = _render(tokenizer, conversation, add_prompt)
            except Exception:  # the template itself refuses this conversation: so would training
                continue
            got = fmt.render(conversation, add_generation_prompt=add_prompt)
            if got != expected:
                at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
                raise TemplateNotConvertible(
                    f"the measured format does not reproduce the template on {what} {number} (from character {at}: "
                    f"{expected[at:at + 40]!r} expected, {got[at:at + 40]!r} written)")


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
    reply can be continued. BOS is left to the tokenizer unless `include_bos`. A role the format cannot
    render writes nothing (the export has checked the run's own conversations).
    """
    folded = fmt.system_joiner is not None
    lines = [_go_literal(fmt.bos) if include_bos and fmt.bos else ""]
    if folded:
        lines[0] += '{{- $system := "" }}'
    if fmt.default_system is not None and "system" in fmt.prefix:
        # The template's own default (Qwen 2.5's, Llama 3.1's date header) when the conversation has no system turn;
        # the Modelfile's SYSTEM says the same, but Ollama inserts no empty one.
        lines[0] += ('{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
                     + _go_literal(fmt.prefix["system"] + fmt.default_system + fmt.suffix["system"]) + "{{- end }}")
    lines[0] += "{{- range $i, $_ := .Messages }}"
    lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
    keyword = "if"
    if folded:
        lines.append('{{- if eq .Role "system" }}{{- $system = .Content }}')
        keyword = "else if"
    for role in ("system", "user", "tool"):
        if role not in fmt.prefix or (role == "system" and folded):
            continue
        content = "{{ .Content }}"
        if role == "user" and folded:
            content = ("{{- if $system }}{{ $system }}" + _go_literal(fmt.system_joiner) + '{{- $system = "" }}'
                       "{{- end }}{{ .Content }}")
        prefix = _go_literal(fmt.prefix[role])
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}{prefix}{content}{_go_literal(fmt.suffix[role])}')
        if role != "system":
            lines.append(f"{{{{- if $last }}}}{_go_literal(fmt.generation_prompt)}")
            lines.append("{{- end }}")
        keyword = "else if"
    lines.append(f'{{{{- {keyword} eq .Role "assistant" }}}}{_go_literal(fmt.prefix["assistant"])}{{{{ .Content }}}}')
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
