"""Evaluation (studio.core.eval) and `finetune-studio eval`: eval sets, the held-out split as training makes it,
batched greedy replies scored and streamed to results.jsonl, resume after a cancel or a kill, the summary."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from studio.core.eval.cases import EvalSetError, held_out_set, load_eval_set
from studio.core.eval.results import read_results


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_run_that_held_nothing_out_says_to_give_data(trained_run):
    with pytest.raises(EvalSetError, match=r"held out no eval data .* --data FILE"):
        held_out_set(trained_run)


# ------------------------------------------------------------------ the demo end to end


def test_the_cli_scores_the_tuned_demo_adapter_right_and_the_base_wrong(trained_run, demo_assets, run_studio):
    result = run_studio("eval", trained_run, "--data", demo_assets.dataset_path, "--metric", "exact,tool_call",
                        "--base", "--max-new-tokens", 60, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    tuned = summary["models"]["run"]
    assert tuned["metrics"]["exact"]["passed"] >= 8 and tuned["metrics"]["exact"]["total"] == 10
    assert summary["models"]["base"]["metrics"]["exact"] == {"passed": 0, "total": 10, "mean_score": 0.0}
    assert tuned["eval_loss"] < summary["models"]["base"]["eval_loss"] / 4
    assert summary["complete"] and summary["models"]["base"]["source"] is None
    folder = trained_run / "evals" / "dataset"
    records = _results(folder)
    assert sorted((r["model"], r["case"]) for r in records) == sorted(
        (model, str(line)) for model in ("base", "run") for line in range(1, 11))
    assert json.loads((folder / "summary.json").read_text(encoding="utf-8")) == summary
    assert "base: " in result.stderr and "examples/s" in result.stderr, "progress on stderr"

    # The demo's four calls are the <tool_code>name({...})</tool_code> form the tool-call metric reads: the
    # untrained base makes none of them, the tuned adapter all four; the six other cases expect no call, and the
    # summary says so beside the score, so the base's 6/10 (or a 10/10) is not read as a learned call.
    base_calls, tuned_calls = (summary["models"][m]["metrics"]["tool_call"] for m in ("base", "run"))
    assert base_calls["cases_expecting_a_call"] == tuned_calls["cases_expecting_a_call"] == 4
    assert base_calls["parts"]["call_present"] == {"passed": 0, "total": 4}
    assert tuned_calls["parts"]["call_present"] == tuned_calls["parts"]["arguments_right"] == {"passed": 4, "total": 4}
    assert base_calls["passed"] <= 6 and tuned_calls["passed"] == 10
    table = run_studio("eval", trained_run, "--data", demo_assets.dataset_path, "--metric", "exact,tool_call",
                       "--base", "--max-new-tokens", 60)  # every reply kept: the table from the stored results
    assert table.returncode == 0, table.stderr[-3000:]
    [row] = [line for line in table.stdout.splitlines() if line.startswith("tool_call")]
    assert row.split()[:5] == ["tool_call", "(4", "expect", "a", "call)"] and "10/10" in row


def test_bad_input_exits_2_with_one_clear_line(trained_run, demo_assets, run_studio, tmp_path):
    text_only = _write_jsonl(tmp_path / "plain.jsonl", [{"text": "no chat here"}])
    for args, message in (
        (["--metric", "exact,bleu"], "unknown metric 'bleu'"),
        (["--pattern", "[0-9"], "regex '[0-9' does not compile"),
        (["--data", text_only], "plain.jsonl: no assistant turns to evaluate"),
        (["--gguf", tmp_path / "missing.gguf"], "missing.gguf: not a .gguf file"),
    ):
        if "--data" not in args:
            args = ["--data", demo_assets.dataset_path, *args]
        result = run_studio("eval", trained_run, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines == [f"finetune-studio eval: {lines[-1].split(': ', 1)[1]}"] and message in lines[-1], lines
    assert not (trained_run / "evals" / "plain").exists()


def test_an_exported_gguf_is_scored_beside_the_run_and_its_replies_compared(trained_run, demo_assets, run_studio,
                                                                             tmp_path):
    from studio.core.export.gguf import export_gguf

    exported = export_gguf(trained_run, tmp_path / "gguf" / "demo-f16.gguf", gguf_type="f16")
    result = run_studio("eval", trained_run, "--data", demo_assets.dataset_path, "--metric", "exact",
                        "--gguf", exported.path, "--max-new-tokens", 60, "--output", tmp_path / "ev")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gguf replies identical to run's: 10/10" in result.stdout
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    gguf = summary["models"]["gguf"]
    assert gguf["metrics"]["exact"]["passed"] == summary["models"]["run"]["metrics"]["exact"]["passed"] >= 8
    assert gguf["identical_to"] == {"column": "run", "identical": 10, "total": 10, "differing_cases": []}
    assert gguf["source"] == str(exported.path.resolve()) and "not llama.cpp" in gguf["read_by"]


@pytest.fixture(scope="module")
def demo_chat(trained_run):
    """The tuned demo run loaded once (the base as trained, its adapter) for the in-process evals below."""
    from studio.core.chat.model import ChatModel

    chat = ChatModel.load(trained_run)
    yield chat
    chat.unload()


def test_batched_left_padded_replies_equal_one_by_one_replies(demo_chat, demo_assets):
    from studio.core.eval.generate import generate_batch

    cases = load_eval_set(demo_assets.dataset_path).cases
    batched = generate_batch(demo_chat, "run", cases, max_new_tokens=60)
    one_by_one = [demo_chat.reply(c.messages(), max_new_tokens=60, adapter="run") for c in cases]
    assert [g.reply for g in batched] == one_by_one
    assert sum(g.reply == c.expected for g, c in zip(batched, cases)) >= 8
    assert not any(g.truncated for g in batched), "the tuned replies end with the end-of-turn token"
    cut = generate_batch(demo_chat, None, cases[:3], max_new_tokens=5, with_loss=False)
    assert all(g.truncated and g.new_tokens == 5 for g in cut), "the base rambles: cut at 5 tokens and marked"


def test_a_cancelled_eval_resumes_where_it_stopped_and_keeps_each_case_once(demo_chat, demo_assets, trained_run,
                                                                           tmp_path):
    from studio.core.eval.runner import EvalJob, run_eval

    eval_set = load_eval_set(demo_assets.dataset_path)
    job = EvalJob(trained_run, eval_set, metrics=["exact", "chrf"], include_base=True, output_dir=tmp_path / "ev",
                  max_new_tokens=40, batch_size=2)
    seen: list[dict] = []
    progress: list[tuple[int, int]] = []
    first = run_eval(job, chat=demo_chat, on_result=seen.append, should_stop=lambda: len(seen) >= 6,
                     progress=lambda done, total, message: progress.append((done, total)))
    assert first.status == "cancelled" and first.generated == 6 and not first.summary["complete"]
    assert [(r["model"], r["case"]) for r in _results(job.folder())] == [(r["model"], r["case"]) for r in seen]
    assert progress[-1] == (6, 20)
    # A killed process may leave half a line: it is not a result.
    with (job.folder() / "results.jsonl").open("a", encoding="utf-8") as stream:
        stream.write('{"model": "run", "case": "3", "reply": "half a li')

    second = run_eval(job, chat=demo_chat)
    assert second.status == "completed" and second.resumed == 6 and second.generated == 14
    records = _results(job.folder())
    assert len(records) == 20 and len({(r["model"], r["case"]) for r in records}) == 20
    assert records[:6] == seen, "the first run's results are kept as they were"
    assert second.summary["models"]["run"]["metrics"]["exact"]["passed"] >= 8
    assert second.summary["models"]["base"]["metrics"]["exact"]["passed"] == 0

    # Another metric on resume is scored from the stored replies; nothing is generated again.
    third = run_eval(EvalJob(trained_run, eval_set, metrics=["exact", "normalised"], include_base=True,
                             output_dir=job.folder(), max_new_tokens=40), chat=demo_chat)
    assert third.generated == 0 and third.summary["models"]["run"]["metrics"]["normalised"]["total"] == 10
    assert all("normalised" in r["scores"] for r in read_results(job.folder() / "results.jsonl"))
    # Another generation length changes the replies: another eval, in a folder of its own; the first stays whole.
    stored = (job.folder() / "results.jsonl").read_bytes()
    fourth = run_eval(EvalJob(trained_run, eval_set, metrics=["exact"], output_dir=job.folder(), max_new_tokens=4),
                      chat=demo_chat)
    assert fourth.resumed == 0 and fourth.generated == 10 and fourth.folder == tmp_path / "ev-2"
    assert fourth.summary["written_beside"] == {"folder": str(job.folder()),
                                                "because": "max new tokens 40 there, 4 here, other models or weights"}
    assert fourth.summary["models"]["run"]["truncated"] == 10 and len(_results(fourth.folder)) == 10
    assert (job.folder() / "results.jsonl").read_bytes() == stored


def test_a_killed_cli_eval_resumes_with_each_case_once(trained_run, demo_assets, run_studio, tmp_path):
    """The process killed (SIGKILL) once the first results are on disk; the same command finishes the rest."""
    import signal
    import subprocess
    import sys

    output = tmp_path / "killed"
    command = [sys.executable, "-m", "studio", "eval", str(trained_run), "--data", str(demo_assets.dataset_path),
               "--metric", "exact", "--base", "--batch-size", "1", "--max-new-tokens", "60", "--output", str(output)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in child.stderr:  # progress lines: kill after the third scored result
        if re.search(r": 3/20 ", line):
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL
    before = len(read_results(output / "results.jsonl"))
    assert 3 <= before < 20

    result = run_studio(*command[3:], "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming: {before} of 20 results kept" in result.stderr
    records = _results(output)
    assert len(records) == 20 and len({(r["model"], r["case"]) for r in records}) == 20
    assert json.loads(result.stdout)["models"]["base"]["metrics"]["exact"]["passed"] == 0


# ------------------------------------------------------------------ a tool-call case end to end


CITIES = ["İzmir", "Ankara", "Muğla", "Bursa", "Eskişehir", "Iğdır", "Şanlıurfa", "Çanakkale", "Isparta", "Diyarbakır"]


def _call(name: str, **arguments: str) -> str:
    return f"<tool_code>{name}({json.dumps(arguments, ensure_ascii=False)})</tool_code>"


def call_centre_dialogues(count: int, seed: int) -> list[dict]:
    """Turkish call-centre conversations ending in an API call; a quarter ask for the number first."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        phone = "05" + "".join(rng.choice("0123456789") for _ in range(9))
        order = "SP" + "".join(rng.choice("0123456789") for _ in range(6))
        city = rng.choice(CITIES)
        turns = [
            [("user", f"Merhaba, {phone} numaralı hattımın faturasını öğrenebilir miyim?"),
             ("assistant", f"Tabii, faturanıza bakıyorum. {_call('get_bill', phone=phone)}")],
            [("user", f"{order} numaralı siparişim nerede?"),
             ("assistant", f"Siparişinizi kontrol ediyorum. {_call('track_order', order_id=order)}")],
            [("user", f"{city} ilinde internet kesintisi var mı?"),
             ("assistant", f"{city} için arıza kaydına bakıyorum. {_call('check_outage', city=city)}")],
            [("user", "Faturamı öğrenmek istiyorum."), ("assistant", "Tabii, hattınızın numarası nedir?"),
             ("user", phone), ("assistant", f"Teşekkürler, bakıyorum. {_call('get_bill', phone=phone)}")],
        ][i % 4]
        rows.append({"messages": [{"role": role, "content": content} for role, content in turns]})
    return rows


def test_tool_calls_end_to_end_on_held_out_dialogues_with_new_numbers(demo_assets, run_studio, tmp_path):
    """Train on 40 dialogues, evaluate on 12 unseen ones (the run's eval file: new phone and order numbers).

    Measured on the CPU demo model (2 layers, width 128): the tuned model calls the right function with valid
    JSON in every call case (12/12) and the base never calls; almost no argument is right (0/12 before issue 21's
    fix that keeps the 4-bit weights trainable across the run's evaluations, 2/12 after): a model this small does
    not learn to copy an unseen number. What is checked is that the scoring says exactly that."""
    from studio.core.config.settings import load_config, save_config

    train = _write_jsonl(tmp_path / "train.jsonl", call_centre_dialogues(40, seed=1))
    held_out = _write_jsonl(tmp_path / "held-out.jsonl", call_centre_dialogues(12, seed=2))
    config = load_config(demo_assets.config_path)
    config.data.train_file, config.data.eval_file = str(train), str(held_out)
    config.training.max_steps, config.training.save_steps, config.training.eval_steps = 200, 1000, 100
    save_config(config, tmp_path / "calls.toml")
    run = tmp_path / "run"
    trained = run_studio("train", tmp_path / "calls.toml", "--output", run)
    assert trained.returncode == 0, trained.stderr[-3000:]

    result = run_studio("eval", run, "--base", "--metric", "tool_call,exact", "--json")  # no --data: held out
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["name"] == "held-out" and summary["cases"] == 15  # 12 calls, 3 "what is your number?" turns
    tuned = summary["models"]["run"]["metrics"]["tool_call"]["parts"]
    base = summary["models"]["base"]["metrics"]["tool_call"]["parts"]
    assert tuned["call_present"] == {"passed": 12, "total": 12} and tuned["valid_json"]["passed"] == 12
    assert tuned["right_function"]["passed"] >= 10
    assert base["call_present"]["passed"] == 0
    print("\ntool-call scores on held-out dialogues:", json.dumps(summary["models"], ensure_ascii=False))

    # The verdicts agree with a plain reading of each reply: the call text equal to the expected one.
    for record in _results(run / "evals" / "held-out"):
        score = record["scores"]["tool_call"]
        want = re.findall(r"<tool_code>(.*?)</tool_code>", record["expected"])
        got = re.findall(r"<tool_code>(.*?)</tool_code>", record["reply"])
        same = [json.loads(w[w.index("("):][1:-1]) for w in want] == [
            json.loads(g[g.index("("):][1:-1]) for g in got]
        assert score["passed"] == same, record
        if want and got and not same and score["detail"]["calls"][0]["right_function"]:
            [row] = score["detail"]["calls"][0]["arguments"]
            assert row["status"] == "wrong" and row["got"] in record["reply"] and row["expected"] in record["expected"]
