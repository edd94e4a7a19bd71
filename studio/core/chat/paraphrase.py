"""Paraphrase the user turns of a conversation with a model the user has, and keep only what teaches the same
thing: the slot values said, the language unchanged, not a near-copy of the original or of a sibling, not too
long. Every rejection is counted by its reason; what is accepted goes into the grow recipe, so a re-run
reproduces it without the model.

Writers: a local OpenAI-compatible server (llama-cpp-python's, Ollama's /v1, vLLM…) on this machine only, or a
local model folder (the base model, any HF folder) loaded with transformers. Language is told by `langid`,
whose model ships inside the package (nothing is downloaded at run time); closeness is chrF (core.metrics).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from studio.core.system.tasks import TaskState
from studio.core.data.grow.recipe import Paraphrase
from studio.core.data.grow.slots import Slot, detect
from studio.core.metrics.text import chrf

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
NEAR_DUPLICATE = 0.85
"""chrF (0..1) at or above which a candidate says the same words as its original or a sibling."""
MAX_GROWTH = 2.5
"""A candidate longer than this many times its original (in characters) is rejected as too long."""
MAX_REPLY_TOKENS = 160
"""The most tokens a writer is asked for (a server's max_tokens, a folder's max_new_tokens): one rewritten
message, not an essay."""
REASONS = ("empty", "slot value missing", "number added", "language changed", "near-duplicate of the original",
           "near-duplicate of a sibling", "too long")
PROMPT = ("Rewrite the customer's message below in other words, as another customer might say it. Write in the "
          "same language ({language}). Keep these values exactly as written: {values}. Reply with the rewritten "
          "message only.\n\nMessage: {text}")


class ParaphraseError(RuntimeError):
    """A writer that cannot be used (a remote host, a server that does not answer); one line naming it."""


def language(text: str) -> str:
    import langid

    return langid.classify(text)[0]


def _scripts(text: str) -> set[str]:
    """The writing systems a text's letters come from ("LATIN", "CYRILLIC", "HANGUL", "CJK", ...)."""
    return {unicodedata.name(ch, "UNKNOWN").split()[0] for ch in text if ch.isalpha()}


def _numbers_added(candidate: str, original: str, values: list[str]) -> list[str]:
    """Digit runs the candidate says beyond its slot values that the original does not say: a date, a time or
    an amount the tool call cannot carry, so training on it would teach the model to ignore a number the user
    gave."""
    for value in sorted(values, key=len, reverse=True):
        candidate, original = candidate.replace(value, " "), original.replace(value, " ")
    said = set(re.findall(r"\d+", original))
    return [run for run in re.findall(r"\d+", candidate) if run not in said]


def values_said(text: str, slots: list[Slot], turn: int) -> list[str]:
    """The forms the user turn `turn` writes its slot values in (what a paraphrase must keep)."""
    return [place.text for slot in slots for place in slot.places if place.turn == turn]


@dataclass
class Verdict:
    accepted: bool
    reason: str = ""


def judge(candidate: str, original: str, *, values: list[str], siblings: list[str], max_length: int,
          count: Callable[[str], int] | None = None, original_language: str | None = None) -> Verdict:
    """One candidate through every filter, in order; the first that fails names the rejection."""
    text = candidate.strip()
    if not text:
        return Verdict(False, "empty")
    if any(value not in text for value in values):
        return Verdict(False, "slot value missing")
    if _numbers_added(text, original, values):
        return Verdict(False, "number added")
    # langid reads a Turkish sentence with a Korean word at its end as Turkish; a letter from a script the
    # original does not use is a language change all the same (small base models drift into other scripts).
    if language(text) != (original_language or language(original)) or not _scripts(text) <= _scripts(original):
        return Verdict(False, "language changed")
    if chrf(text, original).score >= NEAR_DUPLICATE:
        return Verdict(False, "near-duplicate of the original")
    if any(chrf(text, sibling).score >= NEAR_DUPLICATE for sibling in siblings):
        return Verdict(False, "near-duplicate of a sibling")
    length = count(text) if count is not None else len(text)
    if length > max_length or len(text) > MAX_GROWTH * max(len(original), 1):
        return Verdict(False, "too long")
    return Verdict(True)


class Writer(Protocol):
    def write(self, prompt: str, *, seed: int) -> str: ...


@dataclass
class ServerWriter:
    """An OpenAI-compatible chat endpoint on this machine: llama-cpp-python's server, Ollama (http://127.0.0.1:11434)."""

    url: str
    model: str = "local"
    temperature: float = 0.9
    timeout_s: float = 120.0

    def __post_init__(self):
        host = urllib.parse.urlsplit(self.url).hostname or ""
        if host not in LOCAL_HOSTS and f"[{host}]" not in LOCAL_HOSTS:
            raise ParaphraseError(f"{self.url}: not a server on this machine (127.0.0.1 or localhost); the data "
                                  "stays here")
        self.url = self.url.rstrip("/")

    def write(self, prompt: str, *, seed: int) -> str:
        endpoint = self.url if self.url.endswith("/chat/completions") else \
            self.url + ("/chat/completions" if self.url.endswith("/v1") else "/v1/chat/completions")
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": self.temperature, "seed": seed, "max_tokens": MAX_REPLY_TOKENS}).encode()
        request = urllib.request.Request(endpoint, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ParaphraseError(f"{endpoint}: {getattr(error, 'reason', error)}") from None
        return str(reply["choices"][0]["message"]["content"] or "")


@dataclass
class FolderWriter:
    """A local model folder (the base model, any HF folder), loaded and sampled as the Chat tab does (ChatModel: on
    the GPU where there is one, in its dtype, 4-bit when asked, a fallback chat template, stopping at the end of
    the turn), so paraphrasing with a 3B or 8B base model runs on the user's card, not on the CPU."""

    folder: str
    temperature: float = 0.9
    max_new_tokens: int = MAX_REPLY_TOKENS
    load_in_4bit: bool = False
    _model: Any = field(default=None, repr=False)

    def write(self, prompt: str, *, seed: int) -> str:
        from studio.core.chat.model import ChatModel, GenerationSettings

        if self._model is None:  # once: every reply after the first reuses the loaded model
            self._model = ChatModel.load(self.folder, load_in_4bit=self.load_in_4bit)
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=seed)
        return self._model.reply([{"role": "user", "content": prompt}], settings)


@dataclass
class ParaphraseOutcome:
    accepted: list[Paraphrase] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    asked: int = 0
    cancelled: bool = False


def _clean(reply: str) -> str:
    text = reply.strip().strip('"').strip()
    for prefix in ("Message:", "Mesaj:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    return text.splitlines()[0].strip() if text else ""


def paraphrase(conversations: list[tuple[str, list[dict[str, Any]]]], writer: Writer, *, per_turn: int = 2,
               tries: int = 4, max_length: int = 512, seed: int = 0, state: TaskState | None = None,
               kinds: dict[str, str] | None = None, count: Callable[[str], int] | None = None,
               into: ParaphraseOutcome | None = None) -> ParaphraseOutcome:
    """Up to `per_turn` accepted paraphrases of each user turn of each (hash, messages), asking the writer at
    most `tries` times per wanted one. `count(text)` measures a turn against `max_length` (the tokenizer's
    tokens; characters without one). `state.progress(done, total, eta_text)`; `state.cancelled()` stops after
    the current reply, keeping what was accepted. `into` is filled as the loop goes, so a caller that never gets
    the return value (a cancelled or failed background task) still holds every reply judged until then."""
    outcome = into if into is not None else ParaphraseOutcome()
    jobs = [(h, messages, turn) for h, messages in conversations
            for turn, m in enumerate(messages) if m.get("role") == "user" and str(m.get("content") or "").strip()]
    started = time.monotonic()
    for done, (h, messages, turn) in enumerate(jobs):
        if state is not None and state.cancelled():
            outcome.cancelled = True
            break
        original = str(messages[turn]["content"])
        slots = detect(messages, kinds).slots
        values = values_said(original, slots, turn)
        lang = language(original)
        siblings: list[str] = []
        for attempt in range(tries * per_turn):
            if len(siblings) >= per_turn or (state is not None and state.cancelled()):
                break
            prompt = PROMPT.format(language=lang, values=", ".join(values) or "(none)", text=original)
            candidate = _clean(writer.write(prompt, seed=seed * 1000 + attempt))
            outcome.asked += 1
            verdict = judge(candidate, original, values=values, siblings=siblings, max_length=max_length,
                            original_language=lang, count=count)
            if verdict.accepted:
                siblings.append(candidate)
                outcome.accepted.append(Paraphrase(h, turn, candidate))
            else:
                outcome.rejected[verdict.reason] += 1
        if state is not None:
            elapsed = time.monotonic() - started
            left = elapsed / (done + 1) * (len(jobs) - done - 1)
            state.progress(done + 1, len(jobs), f"about {left:.0f} s left")
    return outcome


__all__ = ["ParaphraseError", "ServerWriter", "FolderWriter", "ParaphraseOutcome", "Verdict", "judge",
           "paraphrase", "language", "REASONS", "NEAR_DUPLICATE"]
