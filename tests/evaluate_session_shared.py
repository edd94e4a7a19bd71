"""What tests/core/sessions/test_evaluate_session.py and tests/slow/test_evaluate_session_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import json
from pathlib import Path
import pytest
from studio.core.eval.cases import EvalCase, EvalSet
from studio.core.eval.runner import EvalJob
from studio.core.metrics.registry import build_metric
from studio.core.sessions.evaluate import EvaluateSession


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
