"""The paraphrase loop with a local model folder (FolderWriter, issue 25), on the offline demo model: every reply
asked is judged and counted by a known reason, the model is loaded once for all of them, and the same seed gives the
same replies — the recipe's promise of a reproducible run rests on it. The demo model is random: its prose is not
what is tested, the loop is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from studio.core.chat.paraphrase import REASONS, FolderWriter, paraphrase
from studio.core.data.split import content_hash

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402

SHORT_REPLY = 16
"""Tokens per reply: enough for the loop, and the test stays in the fast lane."""


class Recorded:
    """The writer under test, with every reply it gave (seed, text)."""

    def __init__(self, writer):
        self.writer = writer
        self.replies: list[tuple[int, str]] = []

    def write(self, prompt, *, seed):
        reply = self.writer.write(prompt, seed=seed)
        self.replies.append((seed, reply))
        return reply


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    path = write_callcentre(tmp_path_factory.mktemp("calls") / "calls.jsonl", 2, seed=1)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(content_hash(r), r["messages"]) for r in rows]


@pytest.fixture
def loads(monkeypatch):
    """How many times a model's weights are loaded."""
    import studio.core.models.trained_base as trained_base

    calls = []
    load = trained_base.load_causal_lm

    def counted(*args, **kwargs):
        calls.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(trained_base, "load_causal_lm", counted)
    return calls


def _folder(demo_assets) -> FolderWriter:
    return FolderWriter(str(demo_assets.model_dir), max_new_tokens=SHORT_REPLY)


def _run(folder, conversations, *, seed):
    writer = Recorded(folder)
    outcome = paraphrase(conversations, writer, per_turn=1, tries=2, seed=seed)
    return writer, outcome


def test_every_reply_of_a_model_folder_is_judged_counted_and_the_model_loaded_once(demo_assets, conversations, loads):
    writer, outcome = _run(_folder(demo_assets), conversations, seed=3)
    user_turns = sum(m["role"] == "user" for _, messages in conversations for m in messages)
    assert user_turns == 2 and 2 <= outcome.asked <= 2 * user_turns  # one to `tries` replies per user turn
    assert len(writer.replies) == outcome.asked
    assert len(outcome.accepted) + sum(outcome.rejected.values()) == outcome.asked
    assert set(outcome.rejected) <= set(REASONS)
    assert loads == [(str(demo_assets.model_dir),)]  # once for all the replies, not once per reply


def test_the_same_seed_gives_the_same_replies(demo_assets, conversations):
    import torch

    folder = _folder(demo_assets)
    first, first_outcome = _run(folder, conversations, seed=3)
    torch.rand(1000)  # the global generator moved on between the runs: the seed alone decides
    again, again_outcome = _run(_folder(demo_assets), conversations, seed=3)  # a fresh load, as a re-run has
    assert again.replies == first.replies and first.replies
    assert (again_outcome.accepted, again_outcome.rejected) == (first_outcome.accepted, first_outcome.rejected)
    other, _ = _run(folder, conversations, seed=4)
    assert [text for _, text in other.replies] != [text for _, text in first.replies]  # the seed is used
