"""The Evaluate tab's state without Qt (studio.core.sessions.evaluate): choices, the job, streamed results,
summary counts, the filters and what a row highlights."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.core.eval.command import EvalInputError
from studio.core.sessions.evaluate import (
    ALL, EXTRA, MISSING, REGRESSIONS, TUNED_WRONG, WRONG, Count, EvaluateSession, segments,
)
from evaluate_session_shared import (  # noqa: F401  (shared with the other half)
    CALL, CASES, _case, _fake_run, _record, session,
)













def test_rows_follow_the_eval_sets_order_and_the_filters_pick_tuned_wrong_and_regressions(session):
    assert [row.case for row in session.rows(ALL)] == ["1", "2", "3", "4"]
    assert [row.case for row in session.rows(TUNED_WRONG)] == ["1", "2", "3"]
    assert [row.case for row in session.rows(REGRESSIONS)] == ["3"], "only case 3: the base right, a tuned wrong"
    row = session.rows(REGRESSIONS)[0]
    assert (row.passed("base", "exact"), row.passed("a", "exact"), row.passed("b", "exact")) == (True, False, True)
    assert row.question == "Merhaba" and set(row.records) == {"base", "a", "b"}

    session.judge = "tool_call"  # judged by the tool call, run b's "!" no longer counts
    assert [row.case for row in session.rows(TUNED_WRONG)] == ["1"]
    assert session.rows(REGRESSIONS) == [], "the base never made the call"
    with pytest.raises(ValueError, match="filter must be one of"):
        session.rows("mine")


def test_without_a_base_column_nothing_is_a_regression(session, tmp_path):
    session.include_base = False
    assert session.base_column is None and session.rows(REGRESSIONS) == []
    assert "base" in session.tuned_columns


def test_the_summary_counts_each_models_passes_per_metric(session):
    summary = session.summary()
    assert list(summary) == ["base", "a", "b"]
    assert summary["base"]["exact"] == Count(2, 4) and str(summary["a"]["exact"]) == "2/4"
    assert summary["b"]["tool_call"] == Count(4, 4, 1) and summary["a"]["tool_call"].share == 0.75
    assert summary["base"]["tool_call"] == Count(3, 4, 1), "no call expected and none made counts as right"
    # The chart says how many cases expect a call: the base's 3/4 is three no-call cases, not a learned call.
    assert session.metric_titles() == {"exact": "Exact", "tool_call": "Tool call (1 expect a call)"}


def test_a_wrong_argument_is_marked_in_the_reply_and_in_the_expected_reply(session):
    row = session.rows(ALL)[0]
    record = row.records["a"]
    mark = session.highlight(record, "tool_call")
    [(text, span)] = [(t, s) for t, s in segments(record["reply"], mark.reply) if s]
    assert text == '"05320000000"' and span.kind == WRONG and '"05321234567"' in span.note
    [(text, span)] = [(t, s) for t, s in segments(record["expected"], mark.expected) if s]
    assert text == '"05321234567"' and span.kind == WRONG
    assert "argument phone" in mark.reason
    assert session.highlight(row.records["b"], "tool_call").reply == (), "a passed reply marks nothing"


def test_a_missing_call_is_a_note_and_marked_where_the_expected_reply_has_it(session):
    record = session.rows(ALL)[0].records["base"]
    mark = session.highlight(record, "tool_call")
    assert mark.reply == () and mark.notes == ("missing call: get_bill",)
    [(text, span)] = [(t, s) for t, s in segments(record["expected"], mark.expected) if s]
    assert text == CALL and span.kind == MISSING


def test_missing_extra_arguments_and_a_wrong_function_are_marked():
    session = EvaluateSession(metrics=["tool_call"])
    case = _case("1", "?", '<tool_code>get_bill({"phone": "0532", "month": "may"})</tool_code>')
    extra = _record("a", case, '<tool_code>get_bill({"phone": "0532", "line": 2})</tool_code>', ["tool_call"])
    mark = session.highlight(extra)
    assert [(t, s.kind) for t, s in segments(extra["reply"], mark.reply) if s] == [('"line": 2', EXTRA)]
    assert mark.notes == ('missing argument month = "may"',)
    assert [(t, s.kind) for t, s in segments(case.expected, mark.expected) if s] == [('"month": "may"', MISSING)]

    other = _record("a", case, '<tool_code>track_order({"order_id": "SP1"})</tool_code>', ["tool_call"])
    mark = session.highlight(other)
    marked = [(t, s.note) for t, s in segments(other["reply"], mark.reply) if s]
    assert marked == [("track_order", "expected get_bill")]
    broken = _record("a", case, '<tool_code>get_bill({"phone": 05})</tool_code>', ["tool_call"])
    [(text, span)] = [(t, s) for t, s in segments(broken["reply"], session.highlight(broken).reply) if s]
    assert text == broken["reply"] and "JSON" in span.note


def test_a_text_metric_marks_the_words_that_differ(session):
    record = session.rows(ALL)[1].records["b"]  # "08:00 - 20:00" for "08:00 - 22:00"
    mark = session.highlight(record, "exact")
    assert [t for t, s in segments(record["reply"], mark.reply) if s] == ["20"]
    assert [t for t, s in segments(record["expected"], mark.expected) if s] == ["22"]


def test_start_is_refused_with_a_line_the_user_can_act_on(tmp_path, demo_assets):
    from studio.core.config.settings import load_config, save_config

    session = EvaluateSession()
    assert session.problem() == "Pick at least one run to evaluate."
    run = _fake_run(tmp_path, "demo-run")
    save_config(load_config(demo_assets.config_path), run / "run.toml")
    session.set_runs([run])
    assert "demo-run held out no examples" in session.problem() and "choose a data file" in session.problem()
    with pytest.raises(EvalInputError, match="held out no examples"):
        session.build_job()
    session.eval_source = str(demo_assets.dataset_path)
    assert session.problem() is None
    session.metrics = ["regex"]
    assert session.problem() == "The regex metric needs a pattern."
    session.pattern = "[0-9"
    with pytest.raises(EvalInputError, match="does not compile"):
        session.build_job()
    session.set_runs([run, _fake_run(tmp_path, "other", base="another/model")])
    assert "other was trained on another/model" in session.problem()


def test_the_job_evaluates_the_first_run_with_the_others_and_the_base_as_columns(tmp_path, demo_assets):
    from studio.core.config.settings import load_config, save_config

    first, second = _fake_run(tmp_path, "first"), _fake_run(tmp_path, "second")
    save_config(load_config(demo_assets.config_path), first / "run.toml")
    session = EvaluateSession(runs=[first, second], eval_source=str(demo_assets.dataset_path),
                              metrics=["exact", "tool_call"], pattern="Nimbus", max_new_tokens=40)
    job = session.build_job()
    assert Path(job.model) == first and list(job.adapters) == [second] and job.include_base
    assert list(job.metrics) == ["exact", "regex", "tool_call"] and job.pattern == "Nimbus"
    assert job.max_new_tokens == 40 and len(job.eval_set.cases) == 10
    assert job.folder() == first / "evals" / "dataset", "the same choices resume the same folder"
    assert session.column_runs() == {"first": first, "second": second}
    assert session.chat_target("second") == second and session.base_model() == "demo/model"
    assert session.judging_metric == "tool_call", "the tool call judges when it is scored"
