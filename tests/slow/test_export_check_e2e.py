"""Export fidelity as a check: the same cases answered by the studio (the trained adapter on its trained base) and
by the export, compared reply by reply, with the result stated on the export's model card."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from pathlib import Path

import pytest

from studio.core.eval.verify import CHECK_FOLDER, LLAMA_CPP, TRANSFORMERS_GGUF, check_cases
from studio.core.export.jobs import verify_export
from studio.core.export.model_card import AGREEMENT_ROW
from studio.core.system.tasks import Task

MAX_NEW_TOKENS = 60  # the demo's replies end well before: both sides stop at the end-of-turn token


def _card_row(readme: Path) -> str:
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith(f"| {AGREEMENT_ROW} |")]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory) -> Path:
    """The demo run copied, so the check's replies under its evals folder are this module's alone."""
    run = tmp_path_factory.mktemp("check") / "demo-run"
    shutil.copytree(trained_run, run)
    return run


def test_the_demo_cases_are_its_ten_training_questions(run_copy, demo_assets):
    eval_set = check_cases(run_copy)
    questions = [json.loads(line)["messages"][0]["content"]
                 for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    assert [case.question for case in eval_set.cases] == questions[:10]
    assert eval_set.source == "10 of the run's training examples", "the demo holds nothing out"


def test_an_f16_gguf_of_the_demo_answers_10_of_10_like_the_studio_and_its_card_says_so(run_copy, tmp_path):
    from studio.core.export.gguf import export_gguf

    exported = export_gguf(run_copy, tmp_path / "gguf" / "demo-f16.gguf", gguf_type="f16")
    seen: list[tuple[float, str]] = []
    result = verify_export(run_copy, exported.path, engine="transformers", max_new_tokens=MAX_NEW_TOKENS,
                           task=Task(lambda fraction, message: seen.append((fraction, message))))
    assert result.status == "completed" and result.kind == "gguf" and result.engine == TRANSFORMERS_GGUF
    assert (result.identical, result.total) == (10, 10), [(c.studio, c.export) for c in result.differing]
    assert result.headline() == ("F16: 10/10 replies identical to the studio's; tool call right 10/10 (trained model "
                                 "10/10); passes (identical)")
    assert seen[-1] == (1.0, result.headline()) and any("studio:" in m for _, m in seen)
    assert all(b >= a for (a, _), (b, _) in itertools.pairwise(seen)), "progress only moves forward"
    assert result.readme == exported.readme
    assert _card_row(exported.readme) == f"| {AGREEMENT_ROW} | {result.text()} |"
    assert "demo-f16.Modelfile" in {p.name for p in exported.path.parent.iterdir()}
    studio_results = run_copy / "evals" / CHECK_FOLDER / "studio" / "results.jsonl"
    assert len(studio_results.read_text(encoding="utf-8").splitlines()) == 10

    # A re-export to the same path is checked afresh; the studio's replies are kept and not asked again.
    again = verify_export(run_copy, exported.path, engine="transformers", max_new_tokens=MAX_NEW_TOKENS)
    assert (again.identical, again.total) == (10, 10)
    assert len(studio_results.read_text(encoding="utf-8").splitlines()) == 10


def test_a_merged_folder_is_checked_and_its_card_and_summary_state_the_result(run_copy, tmp_path):
    from studio.core.export.merge import merge_adapter
    from studio.core.runs.record import SUMMARY_FILE, RunRecord

    merged = merge_adapter(run_copy, tmp_path / "merged")
    result = verify_export(run_copy / "adapter", merged, max_new_tokens=MAX_NEW_TOKENS)
    assert result.kind == "merged" and result.engine == "transformers"
    assert (result.identical, result.total) == (10, 10), [(c.studio, c.export) for c in result.differing]
    assert RunRecord.from_json((merged / SUMMARY_FILE).read_text(encoding="utf-8")).agreement == result.text()
    assert _card_row(merged / "README.md") == f"| {AGREEMENT_ROW} | {result.text()} |"
    assert "merged model answered by transformers" in result.text()


def test_a_cancelled_check_leaves_the_card_as_it_was(run_copy, tmp_path):
    from studio.core.export.merge import merge_adapter

    merged = merge_adapter(run_copy, tmp_path / "merged")
    card = (merged / "README.md").read_text(encoding="utf-8")
    cancel = threading.Event()
    cancel.set()
    result = verify_export(run_copy, merged, max_new_tokens=MAX_NEW_TOKENS, task=Task(cancel=cancel))
    assert result.status == "cancelled" and result.cases == []
    assert (merged / "README.md").read_text(encoding="utf-8") == card


def test_cli_exports_and_verifies_a_gguf_in_one_command(run_copy, tmp_path, run_studio):
    output = tmp_path / "ollama" / "demo.gguf"
    result = run_studio("export", "gguf", run_copy, "--output", output, "--type", "f16", "--verify")
    assert result.returncode == 0, result.stderr[-3000:]
    verify_line = next(line for line in result.stdout.splitlines() if line.startswith("verify: "))
    assert verify_line.startswith("verify: F16: 10/10 replies identical to the studio's")
    assert f"| {AGREEMENT_ROW} | {verify_line.removeprefix('verify: ')} |" in (output.parent / "demo.md").read_text()


def test_llama_cpp_answers_an_f16_gguf_of_the_demo_like_the_studio(run_copy, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see docs/BENCHMARKS.md)")
    from studio.core.export.gguf import export_gguf

    exported = export_gguf(run_copy, tmp_path / "gguf" / "demo-f16.gguf", gguf_type="f16")
    result = verify_export(run_copy, exported.path, engine="llama.cpp", max_new_tokens=MAX_NEW_TOKENS)
    assert result.engine == LLAMA_CPP
    assert (result.identical, result.total) == (10, 10), [(c.studio, c.export, c.error) for c in result.differing]
    assert "answered by llama.cpp" in _card_row(exported.readme)
    records = (result.folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == 10 and all(json.loads(line)["answered_by"] == LLAMA_CPP for line in records)


# ------------------------------------------------------------------ a llama.cpp that crashes, through the CLI


_FAKE_PACKAGE = {
    "__init__.py": "from llama_cpp.llama import Llama\n",
    # llama-cpp-python's model parameters: the CPU weight repacking ("extra buffer types") is on by default.
    "llama_cpp.py": "class _Params:\n    use_extra_bufts = True\n\n\n"
                    "def llama_model_default_params():\n    return _Params()\n",
    "llama.py": '''
import json, os, signal
import llama_cpp.llama_cpp as native


class Llama:
    """Dies as llama.cpp did on the demo's q8_0 file while repacking its weights; with repacking off it answers
    with the studio's own replies (read from the check's studio results), as llama.cpp then did."""

    def __init__(self, model_path, **kwargs):
        repacking = native.llama_model_default_params().use_extra_bufts
        print(f"fake llama.cpp: loading {os.path.basename(model_path)}, repacking {repacking}", flush=True)
        if os.environ["FAKE_LLAMA"] != "answers-wrongly" and (repacking or os.environ["FAKE_LLAMA"] == "always-crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        answers = [json.loads(line) for line in open(os.environ["FAKE_LLAMA_ANSWERS"], encoding="utf-8")]
        self.answers = {json.dumps(r["prompt"], ensure_ascii=False): r["reply"] for r in answers}

    def create_chat_completion(self, messages, **kwargs):
        reply = self.answers[json.dumps(messages, ensure_ascii=False)]
        if os.environ["FAKE_LLAMA"] == "answers-wrongly":  # a file that loads and answers, but not as trained
            reply = "?"
        return {"choices": [{"message": {"content": reply}, "finish_reason": "stop"}]}

    def close(self):
        pass
''',
}


def _fake_llama_cpp(folder: Path, mode: str, answers: Path) -> dict:
    """An environment whose `llama_cpp` is the fake above, for the CLI and the check's llama.cpp child alike."""
    import os

    package = folder / "llama_cpp"
    package.mkdir(parents=True)
    for name, text in _FAKE_PACKAGE.items():
        (package / name).write_text(text, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "FAKE_LLAMA": mode, "FAKE_LLAMA_ANSWERS": str(answers)}


def _everything_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_verify_where_llama_cpp_crashes_says_it_could_not_check_exits_1_and_records_no_score(run_copy, tmp_path,
                                                                                                 run_studio):
    output = tmp_path / "ollama" / "demo.gguf"
    studio_answers = run_copy / "evals" / CHECK_FOLDER / "studio" / "results.jsonl"
    env = _fake_llama_cpp(tmp_path / "fake", "always-crash", studio_answers)
    plain = run_studio("export", "gguf", run_copy, "--output", tmp_path / "plain" / "demo.gguf", "--type", "f16",
                       env=env)
    assert plain.returncode == 0, plain.stderr[-3000:]

    result = run_studio("export", "gguf", run_copy, "--output", output, "--type", "f16", "--verify", env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("finetune-studio export gguf: --verify could not run: llama.cpp crashed while loading "
                           "the file (killed by SIGSEGV: fake llama.cpp: loading demo.gguf, repacking True); with CPU "
                           "weight repacking off too: killed by SIGSEGV: fake llama.cpp: loading demo.gguf, "
                           "repacking False"), last
    assert "Traceback" not in result.stderr and "verify:" not in result.stdout
    assert str(output) in result.stdout, "the export itself stands"
    # No score anywhere: the export's files are exactly those of the same export made without --verify.
    written, plain_files = _everything_in(output.parent), _everything_in(tmp_path / "plain")
    assert written.keys() == plain_files.keys()
    for name, content in written.items():
        if not name.endswith(".gguf"):  # the card and the recorded facts name their own folder; compare the words
            assert b"identical" not in content and content.replace(b"/ollama/", b"/plain/") == plain_files[name], name


def test_cli_verify_passing_only_with_repacking_off_says_llama_cpps_default_crashed(run_copy, tmp_path, run_studio):
    output = tmp_path / "ollama" / "demo.gguf"
    studio_answers = run_copy / "evals" / CHECK_FOLDER / "studio" / "results.jsonl"
    env = _fake_llama_cpp(tmp_path / "fake", "crash-when-repacking", studio_answers)
    result = run_studio("export", "gguf", run_copy, "--output", output, "--type", "f16", "--verify", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    verify_line = next(line for line in result.stdout.splitlines() if line.startswith("verify: "))
    assert verify_line.startswith("verify: F16: 10/10 replies identical to the studio's"), verify_line
    assert verify_line.endswith("answered by llama.cpp (llama-cpp-python)). llama.cpp's default (CPU weight "
                                "repacking) crashed on this CPU; checked with repacking off — Ollama runs the same "
                                "default"), verify_line
    card = "\n".join(p.read_text(encoding="utf-8") for p in output.parent.glob("*.md"))
    assert "repacking) crashed on this CPU; checked with repacking off" in card
    assert "Loading weights" not in result.stderr, "the check's model loads print no bars: progress lines only"


def test_cli_verify_of_a_broken_export_prints_the_verdict_and_exits_3(run_copy, tmp_path, run_studio):
    """A script (or CI) exporting with --verify must be able to tell a broken export from a good one without parsing
    the verdict: the export stands, its verdict is printed and recorded, and the status is 3."""
    output = tmp_path / "ollama" / "demo.gguf"
    studio_answers = run_copy / "evals" / CHECK_FOLDER / "studio" / "results.jsonl"
    env = _fake_llama_cpp(tmp_path / "fake", "answers-wrongly", studio_answers)
    result = run_studio("export", "gguf", run_copy, "--output", output, "--type", "f16", "--verify", env=env)
    assert result.returncode == 3, result.stderr[-3000:]
    verify_line = next(line for line in result.stdout.splitlines() if line.startswith("verify: "))
    assert "0/10 replies identical" in verify_line and "broken export:" in verify_line, verify_line
    assert output.is_file() and str(output) in result.stdout, "the export itself stands"
    assert "broken export:" in "\n".join(p.read_text(encoding="utf-8") for p in output.parent.glob("*.md"))
