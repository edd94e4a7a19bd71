"""The Chat tab's state without Qt: compare mode, regenerate, the repair of unanswered turns, clear, the jobs,
the single-turn hint, loading decisions and the reply loop."""

from __future__ import annotations

import json
import threading

import pytest

from studio.core.chat.model import GenerationSettings
from studio.core.sessions.chat import (
    BASE, TUNED, ChatSession, LoadRequest, adapter_in_runs, generate_replies, run_adapter,
)


def test_deleted_runs_and_a_runs_adapter(tmp_path, trained_run):
    assert adapter_in_runs(str(tmp_path / "runs" / "a" / "adapter"), [tmp_path / "runs" / "a"])
    assert not adapter_in_runs(str(tmp_path / "runs" / "b" / "adapter"), [tmp_path / "runs" / "a"])
    assert not adapter_in_runs("", [tmp_path])

    adapter, base = run_adapter(trained_run)
    assert adapter == trained_run / "adapter" and base
    assert run_adapter(tmp_path / "no-run") == (tmp_path / "no-run" / "adapter", None)


# ------------------------------------------------------------------ the reply loop on the real demo model


def test_the_reply_loop_answers_trained_on_the_tuned_side_and_otherwise_on_the_base(trained_run, demo_assets):
    rows = [json.loads(line)["messages"] for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    question, answer = rows[0][0]["content"], rows[0][1]["content"]
    session = ChatSession(compare=True)
    session.loading = LoadRequest(str(demo_assets.model_dir), str(trained_run / "adapter"))
    assert session.loaded(session.loading.load(), (str(demo_assets.model_dir), str(trained_run / "adapter")))
    try:
        session.ask(question)
        streamed = {TUNED: [], BASE: []}
        plan = session.start_replies()
        generate_replies(session.model, plan.jobs, GenerationSettings(max_new_tokens=64), stop=threading.Event(),
                         on_piece=lambda side, text: streamed[side].append(text), on_reply=session.reply_done,
                         on_failed=lambda side, message: pytest.fail(message))
        assert session.finish_replies() == []
    finally:
        session.unload()

    assert session.history[-1]["content"] == answer == "".join(streamed[TUNED])
    assert session.base_history[-1]["content"] != answer and session.base_history[-1]["content"]
    assert session.last_stats[TUNED].tokens > 0 and not session.last_stats[TUNED].stopped
