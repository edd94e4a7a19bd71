"""The paraphrase loop against a real local server (issue 25): llama-cpp-python's OpenAI-compatible server on
127.0.0.1 serving Google's Gemma 3 270M GGUF (benchmarks/real_model.py), offline. The loop is what is tested —
every reply asked, judged and counted, progress reported, the accepted kept — not the 270M base model's prose."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
import time
import urllib.request

import pytest
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from real_model import gemma3_gguf

    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"  # llama.cpp logs a lot: a pipe would fill and stall it
    log_file = log.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gemma3_gguf()),
                                "--host", "127.0.0.1", "--port", str(port), "--chat_format", "gemma",
                                "--n_ctx", "1024"], stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                    json.loads(response.read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()


class State:
    def __init__(self):
        self.reports = []

    def progress(self, *values):
        self.reports.append(values)

    def cancelled(self):
        return False


def test_the_paraphrase_loop_against_a_local_llama_cpp_server(server, tmp_path):
    from _callcentre import write_callcentre
    from studio.core.chat.paraphrase import REASONS, ServerWriter, paraphrase
    from studio.core.data.grow.build import grow
    from studio.core.data.grow.recipe import Recipe
    from studio.core.data.split import content_hash

    rows = [json.loads(line) for line in write_callcentre(tmp_path / "c.jsonl", 2, seed=1).read_text().splitlines()]
    conversations = [(content_hash(r), r["messages"]) for r in rows]
    state = State()
    outcome = paraphrase(conversations, ServerWriter(server), per_turn=1, tries=2, state=state)
    assert outcome.asked >= 2  # at least one reply asked per user turn, at most `tries` when all are rejected
    assert len(outcome.accepted) + sum(outcome.rejected.values()) == outcome.asked
    assert set(outcome.rejected) <= set(REASONS)
    assert [r[:2] for r in state.reports] == [(1, 2), (2, 2)] and all("left" in r[2] for r in state.reports)
    for kept in outcome.accepted:  # whatever the small model wrote, what is kept passed every filter
        original = dict(conversations)[kept.original][kept.turn]["content"]
        assert kept.text != original
    # Kept in a recipe, they reproduce without the server.
    grown = grow(Recipe(source="c.jsonl", variants=1, held_out_fraction=0, paraphrases=outcome.accepted), rows)
    assert sum(r.variant.startswith("p") for r in grown.train) == 2 * len(outcome.accepted)
