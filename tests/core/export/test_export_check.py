"""Export fidelity as a check: the same cases answered by the studio (the trained adapter on its trained base) and
by the export, compared reply by reply, with the result stated on the export's model card."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from studio.core.eval.verify import (
    LLAMA_CPP, TRANSFORMERS_GGUF, CaseCheck, ExportCheckError, ExportVerification, check_verifiable, choose_engine,
)
from studio.core.export.jobs import verify_export
from studio.core.export.model_card import AGREEMENT_ROW, record_agreement


def _card_row(readme: Path) -> str:
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith(f"| {AGREEMENT_ROW} |")]
    assert len(rows) == 1, rows
    return rows[0]


def test_the_headline_names_the_cases_that_differ(tmp_path):
    result = ExportVerification(tmp_path / "m.gguf", "gguf", TRANSFORMERS_GGUF, "completed", tmp_path,
                                "3 of the run's training examples",
                                [CaseCheck("1", "q", "Yes.", "Yes. "), CaseCheck("2", "q", "No.", "Nope."),
                                 CaseCheck("3", "q", "Hi", "", error="llama.cpp: context full")])
    assert result.identical == 1 and result.total == 3, "surrounding whitespace aside; an error is no reply"
    assert result.headline() == "1/3 replies identical to the studio's; cases 2, 3 differ"
    assert "on 3 of the run's training examples" in result.text() and "the GGUF file answered by" in result.text()


def test_a_check_needs_a_trained_adapter_and_an_export(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    with pytest.raises(ExportCheckError, match="no trained adapter to compare"):
        check_verifiable(tmp_path / "merged")
    with pytest.raises(ExportCheckError, match="neither a GGUF file nor a merged model folder"):
        verify_export(tmp_path, tmp_path / "missing.gguf")
    with pytest.raises(ExportCheckError, match="not a merged model folder"):
        choose_engine("merged", "llama.cpp")


def test_llama_cpp_answers_for_a_gguf_where_it_is_installed():
    import importlib.util

    installed = importlib.util.find_spec("llama_cpp") is not None
    assert choose_engine("gguf") == (LLAMA_CPP if installed else TRANSFORMERS_GGUF)
    assert choose_engine("gguf", "transformers") == TRANSFORMERS_GGUF
    if not installed:
        with pytest.raises(ExportCheckError, match="llama-cpp-python is not installed"):
            choose_engine("gguf", "llama.cpp")


def _cases(n):
    from studio.core.eval.cases import EvalCase

    return [EvalCase(id=str(i), prompt=({"role": "user", "content": f"question {i}"},), expected=f"answer {i}",
                     line=i) for i in range(1, n + 1)]


_FAKE_LLAMA = """
import json, os, signal, sys, time
job, out = json.load(open(sys.argv[1])), sys.argv[2]
print("llama-child: model loaded", flush=True)
with open(out, "a") as f:
    for case in job["cases"]:
        if {crash_at!r} == case["id"]:
            print("GGML_ASSERT failed", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)  # what llama.cpp's native code does to a process
        time.sleep({pause})
        f.write(json.dumps({{"case": case["id"], "reply": "answer " + case["id"], "truncated": False, "error": ""}}) + "\\n")
        f.flush()
"""


def _fake_llama(crash_at=None, pause=0.0):
    import sys

    code = _FAKE_LLAMA.format(crash_at=crash_at, pause=pause)
    return lambda job, replies: [sys.executable, "-c", code, str(job), str(replies)]


def test_a_llama_cpp_crash_is_no_result_and_says_where_it_came(tmp_path):
    """A crash is raised as one, never turned into replies that 'differ' (the check would blame the export)."""
    from studio.core.eval.verify import LlamaCrashed, _llama_cpp_replies

    progress = []
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "results.jsonl").write_text('{"model": "gguf", "case": "1", "reply": "old"}\n')
    with pytest.raises(LlamaCrashed) as crash:
        _llama_cpp_replies(tmp_path / "x.gguf", _cases(3), 32, tmp_path / "check",
                           lambda done, total, message: progress.append(done), lambda: False,
                           command=_fake_llama(crash_at="3"))
    assert str(crash.value) == ("llama.cpp crashed while answering case 3, after 2 of 3 (killed by SIGSEGV: "
                                "GGML_ASSERT failed)")
    assert progress[-1] == 2  # the cases answered before the crash were reported as they came
    assert not (tmp_path / "check" / "results.jsonl").exists(), "no results: neither this check's nor an older one"
    answered = (tmp_path / "check" / "llama-replies.jsonl").read_text().splitlines()
    assert [json.loads(line)["case"] for line in answered] == ["1", "2"], "what it answered is kept to read"


def test_a_crash_while_loading_is_told_from_one_while_answering(tmp_path):
    import sys

    from studio.core.eval.verify import LlamaCrashed, _llama_cpp_replies

    code = "import os, signal; print('ggml_repack: repacking q8_0', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    with pytest.raises(LlamaCrashed, match=r"^llama.cpp crashed while loading the file \(killed by SIGSEGV: "
                                           r"ggml_repack: repacking q8_0\)$"):
        _llama_cpp_replies(tmp_path / "x.gguf", _cases(2), 32, tmp_path / "check", lambda *a: None, lambda: False,
                           command=lambda job, replies: [sys.executable, "-c", code])


def test_cancelling_a_llama_cpp_check_stops_its_process(tmp_path):
    from studio.core.eval.verify import _llama_cpp_replies

    stop = threading.Event()
    result = {}

    def check():
        result["replies"] = _llama_cpp_replies(tmp_path / "x.gguf", _cases(50), 32, tmp_path / "check",
                                               lambda done, total, message: stop.set(), stop.is_set,
                                               command=_fake_llama(pause=0.2))

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and result["replies"] is None
    assert len((tmp_path / "check" / "llama-replies.jsonl").read_text().splitlines()) < 50


def test_a_gguf_cards_agreement_row_is_replaced_or_added_and_a_merges_note_follows(tmp_path):
    from studio.core.export.model_card import write_model_card
    from studio.core.runs.record import RunSummary

    summary = RunSummary(run_name="demo", base_model="/models/tiny", settings={"lora": {"r": 8}})
    readme = write_model_card(tmp_path, summary, "gguf", files={"gguf": "demo.gguf"}, name="demo")  # demo.md
    record_agreement(tmp_path / "demo.gguf", "9/10 replies identical to the studio's")
    lines = readme.read_text(encoding="utf-8").splitlines()
    method = next(i for i, line in enumerate(lines) if line.startswith("| Method |"))
    assert lines[method + 1] == f"| {AGREEMENT_ROW} | 9/10 replies identical to the studio's |"

    summary.agreement = "3/8 greedy replies identical to the trained model's"  # a merge into the original weights
    write_model_card(tmp_path, summary, "gguf", files={"gguf": "demo.gguf"}, notes=[f"{AGREEMENT_ROW}: old."],
                     name="demo")
    record_agreement(tmp_path / "demo.gguf", "10/10 replies identical to the studio's")
    text = readme.read_text(encoding="utf-8")
    assert _card_row(readme) == f"| {AGREEMENT_ROW} | 10/10 replies identical to the studio's |"
    assert f"> {AGREEMENT_ROW}: 10/10 replies identical to the studio's." in text and "old." not in text
    assert text.startswith("---\nlibrary_name: gguf"), "still the studio's card: a re-export may replace it"


def test_cli_verify_of_an_export_from_a_merged_folder_is_bad_input_before_any_work(tmp_path, run_studio):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    result = run_studio("export", "gguf", tmp_path / "merged", "--output", tmp_path / "out" / "m.gguf", "--verify")
    assert result.returncode == 2, result.stderr
    assert "--verify:" in result.stderr and "no trained adapter to compare" in result.stderr
    assert not (tmp_path / "out").exists()
