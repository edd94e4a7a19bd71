"""The Evaluate tab's state without Qt (studio.core.sessions.evaluate): choices, the job, streamed results,
summary counts, the filters and what a row highlights."""

from __future__ import annotations



from studio.core.system.tasks import Task
from studio.core.sessions.evaluate import REGRESSIONS, TUNED_WRONG, EvaluateSession
from evaluate_session_shared import (  # noqa: F401  (shared with the other half)
    CALL, CASES, _case, _fake_run, _record, session,
)













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
        first = run_eval(job, on_start=session.started, on_result=session.add_result,
                         task=Task(session.progressed, cancel=lambda: len(session.records) >= 8), chat=chat)
        assert first.status == "cancelled" and len(session.records) == 8 and session.done == 8
        session.finish(first)
        assert "Start resumes" in session.message

        job.fresh = False
        session.start(job)
        second = run_eval(job, on_start=session.started, on_result=session.add_result,
                          task=Task(session.progressed), chat=chat)
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
