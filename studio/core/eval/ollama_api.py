"""Replies from a model served by Ollama, through its HTTP API on this machine (`POST /api/chat`, not streamed;
docs/api.md in the Ollama repository): greedy, so they compare with the trained model's replies case by case."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from studio.core.eval.cases import EvalCase

DEFAULT_HOST = "http://127.0.0.1:11434"


class OllamaError(RuntimeError):
    """Ollama is missing, refused the model, or its server did not answer."""


@dataclass
class OllamaReply:
    text: str
    truncated: bool
    """The reply stopped at num_predict, not at an end of turn (Ollama's done_reason "length")."""


def chat_reply(name: str, messages: list[dict[str, str]], *, max_new_tokens: int, host: str = DEFAULT_HOST,
               timeout: float = 300) -> OllamaReply:
    """One greedy reply from the model through Ollama's chat API (the Modelfile's template builds the prompt)."""
    body = {"model": name, "messages": messages, "stream": False,
            "options": {"temperature": 0, "top_k": 1, "seed": 0, "num_predict": max_new_tokens}}
    request = urllib.request.Request(f"{host.rstrip('/')}/api/chat", data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise OllamaError(f"Ollama at {host} refused the request: {error.code} "
                          f"{error.read().decode('utf-8', 'replace')[:300]}") from None
    except (urllib.error.URLError, OSError) as error:
        raise OllamaError(f"Ollama's server does not answer at {host} ({error}); start it with `ollama serve`") \
            from None
    message = answer.get("message") or {}
    return OllamaReply(str(message.get("content", "")), answer.get("done_reason") == "length")


def ollama_replies(name: str, cases: list[EvalCase], max_new_tokens: int,
                   report: Callable[[int, int, str], None], stop: Callable[[], bool], *, host: str = DEFAULT_HOST) \
        -> dict[str, tuple[str, bool, str]] | None:
    """{case id: (reply, truncated, error)} from the model `name` in Ollama; None when cancelled. A server that stops
    answering raises OllamaError (no result: a dead server is not a model that answers differently)."""
    replies: dict[str, tuple[str, bool, str]] = {}
    for done, case in enumerate(cases):
        if stop():
            return None
        reply = chat_reply(name, case.messages(), max_new_tokens=max_new_tokens, host=host)
        replies[case.id] = (reply.text, reply.truncated, "")
        report(done + 1, len(cases), f"Ollama: {done + 1}/{len(cases)}")
    return replies
