"""The Evaluate tab's state without Qt (studio.core.sessions.evaluate): choices, the job, streamed results,
summary counts, the filters and what a row highlights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.eval.cases import EvalCase, EvalSet
from studio.core.eval.runner import EvalJob
from studio.core.metrics.registry import build_metric
from studio.core.sessions.evaluate import REGRESSIONS, TUNED_WRONG, EvaluateSession

CALL = '<tool_code>get_bill({"phone": "05321234567"})</tool_code>'


def _fake_run(root: Path, name: str, base: str = "demo/model") -> Path:
    adapter = root / name / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}), encoding="utf-8")
    return root / name


def _case(case_id: str, question: str, expected: str) -> EvalCase:
    return EvalCase(case_id, ({"role": "user", "content": question},), expected, int(case_id))


def _record(model: str, case: EvalCase, reply: str, metrics=("exact", "tool_call")) -> dict:
    scores = {name: build_metric(name)(reply, case.expected).to_dict() for name in metrics}
    return {"model": model, "case": case.id, "key": case.key, "line": case.line, "prompt": case.messages(),
            "expected": case.expected, "reply": reply, "scores": scores}


CASES = [_case("1", "Faturam?", f"Bakıyorum. {CALL}"), _case("2", "Saat kaç?", "08:00 - 22:00"),
         _case("3", "Merhaba", "Merhaba!"), _case("4", "Kesinti?", "Yok.")]


@pytest.fixture
def session(tmp_path):
    """Base and two runs answered four cases (streamed out of order): case 3 is the regression (the base right,
    run a wrong), case 2 is wrong for run b only, case 1 wrong everywhere but by tool call only for run a."""
    session = EvaluateSession(runs=[_fake_run(tmp_path, "a"), _fake_run(tmp_path, "b")], metrics=["exact"])
    session.metrics = ["exact", "tool_call"]
    session.judge = "exact"
    session.start(EvalJob(tmp_path / "a", EvalSet("set", "test", CASES), output_dir=tmp_path / "ev"))
    session.started(["base", "a", "b"], [_record("base", CASES[3], "Yok.")])
    replies = {
        "base": ["Bilmiyorum.", "Her gün.", "Merhaba!"],
        "a": ['Bakıyorum. <tool_code>get_bill({"phone": "05320000000"})</tool_code>', "08:00 - 22:00", "Selam"],
        "b": [f"Bakıyorum! {CALL}", "08:00 - 20:00", "Merhaba!"],
    }
    for index in (2, 0, 1):
        for model in ("b", "a", "base"):
            session.add_result(_record(model, CASES[index], replies[model][index]))
    session.add_result(_record("a", CASES[3], "Yok."))
    session.add_result(_record("b", CASES[3], "Yok."))
    return session


def test_a_real_demo_eval_streams_into_the_session_and_resumes(trained_run, demo_assets):
    from studio.core.chat.model import ChatModel
    from studio.core.eval.runner import run_eval

    session = EvaluateSession(runs=[trained_run], eval_source=str(demo_assets.dataset_path), metrics=["exact"],
                              max_new_tokens=40)
    job = session.build_job()
    job.fresh = True
    session.start(job)
    chat = ChatModel.load(trained_run)
    try:
        first = run_eval(job, on_start=session.started, on_result=session.add_result, progress=session.progressed,
                         should_stop=lambda: len(session.records) >= 8, chat=chat)
        assert first.status == "cancelled" and len(session.records) == 8 and session.done == 8
        session.finish(first)
        assert "Start resumes" in session.message

        job.fresh = False
        session.start(job)
        second = run_eval(job, on_start=session.started, on_result=session.add_result,
                          progress=session.progressed, chat=chat)
    finally:
        chat.unload()
    session.finish(second)
    assert second.resumed == 8 and len(session.records) == 20, "the kept results arrive through on_start"
    assert session.columns == ["base", "run"]
    summary = session.summary()
    assert str(summary["base"]["exact"]) == "0/10" and summary["run"]["exact"].passed >= 8
    assert summary["run"]["exact"].passed == second.summary["models"]["run"]["metrics"]["exact"]["passed"]
    wrong = [row.case for row in session.rows(TUNED_WRONG)]
    assert len(wrong) == 10 - summary["run"]["exact"].passed and session.rows(REGRESSIONS) == []
    assert session.chat_target("run") == trained_run and session.chat_target("base") is None
    assert "8 kept from the last run" in session.message
