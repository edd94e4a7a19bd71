"""Where an eval writes and what stops it, through `finetune-studio eval` on real folders: a name is a plain folder
name under <run>/evals, a folder has one writer and one set of settings (other settings go to NAME-2), a GGUF is
known by its content, a run still training is not evaluated, bad numbers and cut files are refused before anything
is generated or written, prompts longer than the context are cut to fit and counted, a full disk is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.core.eval.results import read_results


def _one_line(result: subprocess.CompletedProcess) -> str:
    """The refusal: exit 2 and exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr[-3000:])
    assert lines[0].startswith("finetune-studio eval: ")
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """The demo run copied, so this test's evals folder is its own."""
    run = tmp_path / "demo-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("evals"))
    return run


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ item 4: a name is a plain folder name


def test_an_eval_name_that_leaves_evals_is_refused_before_anything_is_written(run_copy, demo_assets, run_studio,
                                                                              tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "results.jsonl").write_text("the user's own file\n", encoding="utf-8")
    before = _tree(tmp_path / "victim")
    escape = os.path.relpath(victim, run_copy / "evals")  # ../../victim: where today's eval wrote its results
    for name in (escape, str(victim), "..", ".hidden", "a/b", ""):
        result = run_studio("eval", run_copy, "--data", demo_assets.dataset_path, "--name", name)
        line = _one_line(result)
        assert f"eval name {name!r}: give a plain folder name" in line, line
    assert _tree(victim) == before, "the folder the name pointed at is as it was"
    assert not (run_copy / "evals").exists(), "no eval folder, not even an empty one"


# ------------------------------------------------------------------ item 10: max new tokens


def test_max_new_tokens_below_one_is_refused_and_beyond_the_context_is_capped(run_copy, demo_assets, run_studio,
                                                                             tmp_path):
    for value in ("0", "-5"):
        result = run_studio("eval", run_copy, "--data", demo_assets.dataset_path, "--max-new-tokens", value)
        assert f"max new tokens {value}: give at least 1" in _one_line(result)
    assert not (run_copy / "evals").exists()

    rows = [json.loads(line) for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()][:2]
    data = _write_jsonl(tmp_path / "two.jsonl", rows)
    started = time.monotonic()
    result = run_studio("eval", run_copy, "--data", data, "--base", "--metric", "exact", "--max-new-tokens",
                        "1000000000", "--output", tmp_path / "ev", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 240
    assert ("max new tokens 1000000000 is beyond the model's context of 512 positions: each reply was capped at "
            "the context less its prompt") in result.stdout
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert summary["max_new_tokens_capped"] == {"context": 512, "asked": 1000000000}
    for record in read_results(tmp_path / "ev" / "results.jsonl"):
        prompt_tokens = 512 - record["reply_limit"]
        assert 0 < prompt_tokens < 100 and record["new_tokens"] <= record["reply_limit"] and not record["prompt_cut"]
        if record["model"] == "base":  # the untrained base rambles on: to the end of the context, and no further
            assert record["truncated"] and record["new_tokens"] == record["reply_limit"]


# ------------------------------------------------------------------ item 11: prompts longer than the context


def test_prompts_longer_than_the_context_keep_their_last_tokens_and_are_counted(run_copy, demo_assets, run_studio,
                                                                                tmp_path):
    rows = [json.loads(line) for line in demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    question = rows[0]["messages"][0]["content"]
    long_prompt = {"messages": [{"role": "user", "content": "x" * 20_000 + " " + question},
                                rows[0]["messages"][1]]}
    huge_record = {"messages": [{"role": "user", "content": "lorem ipsum dolor " * 200_000 + question},
                                rows[0]["messages"][1]]}  # 3.6 MB
    data = _write_jsonl(tmp_path / "long.jsonl", [long_prompt, huge_record, rows[1]])
    assert data.stat().st_size > 3_000_000
    result = run_studio("eval", run_copy, "--data", data, "--metric", "exact", "--max-new-tokens", "60", "--json",
                        timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["models"]["demo-run"]["prompts_cut"] == 2 and summary["complete"]
    records = {r["case"]: r for r in read_results(run_copy / "evals" / "long" / "results.jsonl")}
    assert records["1"]["prompt_cut"] > 19_000 // 8 and records["2"]["prompt_cut"] > 500_000 // 8
    assert records["3"]["prompt_cut"] == 0 and records["3"]["reply_limit"] == 60
    assert all(r["loss"] is not None and r["loss"] == r["loss"] for r in records.values()), "a loss on every case"
    assert records["1"]["reply_limit"] == records["2"]["reply_limit"] == 60, "the prompt gives way, not the reply"

    table = run_studio("eval", run_copy, "--data", data, "--metric", "exact", "--max-new-tokens", "60")
    assert table.returncode == 0 and "resuming: 3 of 3 results kept" in table.stderr
    assert re.search(r"^prompts cut to fit\s+2$", table.stdout, re.M), table.stdout


# ------------------------------------------------------------------ item 12: a GGUF cut short


def test_a_gguf_cut_inside_its_header_is_refused_before_any_reply(run_copy, demo_assets, run_studio, tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    whole = tmp_path / "whole.gguf"
    writer = GGUFWriter(str(whole), "llama")
    writer.add_block_count(2)
    writer.add_string("general.name", "demo")
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:60])  # inside the metadata: today a struct.error once the run's replies are in
    result = run_studio("eval", run_copy, "--data", demo_assets.dataset_path, "--gguf", cut)
    line = _one_line(result)
    assert f"--gguf {cut}: not a readable GGUF file (cut short or damaged" in line, line
    assert "examples/s" not in result.stderr and not (run_copy / "evals").exists(), "nothing generated or written"


# ------------------------------------------------------------------ item 6: a GGUF known by its content


def test_a_gguf_altered_in_place_with_its_size_and_mtime_kept_is_not_taken_for_the_same(trained_run, tmp_path):
    from studio.core.eval.runner import adapter_fingerprint

    first = tmp_path / "a.gguf"
    first.write_bytes(b"GGUF" + bytes(4096))
    fingerprint = adapter_fingerprint(None, str(first), "GGUF", files=[first])
    stat = first.stat()
    data = bytearray(first.read_bytes())
    data[2000] ^= 0xFF
    first.write_bytes(bytes(data))
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r
    assert (first.stat().st_size, first.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert adapter_fingerprint(None, str(first), "GGUF", files=[first]) != fingerprint
    # An adapter retrained in place is known by content the same way.
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_run / "adapter", adapter)
    weights = adapter / "adapter_model.safetensors"
    before = adapter_fingerprint(adapter, "base", "4-bit")
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert adapter_fingerprint(adapter, "base", "4-bit") != before


def test_a_resumed_eval_answers_a_byte_altered_gguf_again(run_copy, demo_assets, run_studio, tmp_path):
    from studio.core.export.gguf import export_gguf

    exported = export_gguf(run_copy, tmp_path / "gguf" / "demo-f16.gguf", gguf_type="f16")
    arguments = ["eval", run_copy, "--data", demo_assets.dataset_path, "--metric", "exact", "--max-new-tokens", 40,
                 "--gguf", exported.path, "--name", "with-gguf"]
    first = run_studio(*arguments)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "gguf replies identical to demo-run's: 10/10" in first.stdout
    kept = _tree(run_copy / "evals" / "with-gguf")

    path = exported.path
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x40  # a weight in the last tensor: the same size, a different file
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r

    again = run_studio(*arguments)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "results kept" not in again.stderr, "nothing answered by the old file is taken for the new one's"
    assert "gguf: " in again.stderr and "examples/s" in again.stderr
    assert "written to a new folder" in again.stdout and (run_copy / "evals" / "with-gguf-2").is_dir()
    assert _tree(run_copy / "evals" / "with-gguf") == kept, "the first eval is as it was"


# ------------------------------------------------------------------ item 5: one writer, one set of settings


def test_two_evals_of_one_folder_at_once_and_an_eval_with_other_settings(run_copy, demo_assets, run_studio):
    folder = run_copy / "evals" / "same"
    command = [sys.executable, "-m", "studio", "eval", str(run_copy), "--data", str(demo_assets.dataset_path),
               "--metric", "exact", "--base", "--batch-size", "1", "--max-new-tokens", "60", "--name", "same"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # the first process is writing results
            if re.search(r": 2/20 ", line):
                break
        second = run_studio(*command[3:-4], "--max-new-tokens", "8", "--name", "same")
        line = _one_line(second)
        assert f"eval same is being written by another process (pid {first.pid})" in line, line
        assert first.poll() is None, "the first eval was still writing when the second was refused"
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0
    records = read_results(folder / "results.jsonl")
    assert len(records) == 20 and {r["max_new_tokens"] for r in records} == {60}
    written = _tree(folder)

    # Other settings go beside it, and say so; the first eval's files are untouched, byte for byte.
    other = run_studio(*command[3:-4], "--max-new-tokens", "8", "--name", "same")
    assert other.returncode == 0, other.stderr[-3000:]
    assert (f"written to a new folder: {folder} holds an eval with other settings (max new tokens 60 there, 8 here)"
            in other.stdout)
    assert f"results: {folder}-2{os.sep}results.jsonl" in other.stdout
    assert _tree(folder) == written
    assert {r["max_new_tokens"] for r in read_results(Path(f"{folder}-2") / "results.jsonl")} == {8}

    # The same settings again resume where they are (NAME-2 included), and a metric added scores the stored replies.
    rescored = run_studio(*command[3:7], "--metric", "exact,contains", *command[9:], "--json")
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert "resuming: 20 of 20 results kept" in rescored.stderr and "examples/s" not in rescored.stderr
    summary = json.loads(rescored.stdout)
    assert summary["name"] == "same" and summary["models"]["demo-run"]["metrics"]["contains"]["total"] == 10
    again = run_studio(*command[3:-4], "--max-new-tokens", "8", "--name", "same")
    assert again.returncode == 0 and "resuming: 20 of 20 results kept" in again.stderr
    assert not Path(f"{folder}-3").exists()


# ------------------------------------------------------------------ item 7: a run still training


def test_an_eval_of_a_run_still_training_is_refused_with_its_step(demo_assets, run_studio, tmp_path):
    run = tmp_path / "live-run"
    command = [sys.executable, "-m", "studio", "train", str(demo_assets.config_path), "--output", str(run),
               "--max-steps", "100000"]
    trainer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
                      if line.endswith("}")] if (run / "events.jsonl").is_file() else []
            if any(e["event"] == "step" for e in events):
                break
            assert trainer.poll() is None, "the training process ended early"
            time.sleep(0.5)
        else:
            pytest.fail("no training step within 4 minutes")
        result = run_studio("eval", run, "--data", demo_assets.dataset_path)
        line = _one_line(result)
        assert re.search(r"live-run is training, at step \d+ of 100000; stop it or wait$", line), line
        assert trainer.poll() is None
        assert not (run / "evals").exists(), "no eval folder in the folder the training process holds"
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=60)


# ------------------------------------------------------------------ item 8: a full disk


FULL_DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=16k tmpfs "$DISK"
python -m studio eval "$RUN" --data "$DATA" --metric exact --base --batch-size 2 --max-new-tokens 40 \
    --output "$DISK/ev" > "$OUT/full.stdout" 2> "$OUT/full.stderr"
echo $? > "$OUT/full.rc"
python -c "import json,sys; print(sum(1 for l in open(sys.argv[1]) if l.endswith('}\\n')))" "$DISK/ev/results.jsonl" \
    > "$OUT/kept"
mount -o remount,size=1m "$DISK"
python -m studio eval "$RUN" --data "$DATA" --metric exact --base --batch-size 2 --max-new-tokens 40 \
    --output "$DISK/ev" --json > "$OUT/again.stdout" 2> "$OUT/again.stderr"
echo $? > "$OUT/again.rc"
"""


def test_a_full_disk_during_an_eval_is_one_line_and_the_same_command_resumes(run_copy, demo_assets, tmp_path):
    """A real full disk: a 16 kB tmpfs in a mount namespace of its own (`unshare -m`; the tests run as root)."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = {**os.environ, "DISK": str(disk), "RUN": str(run_copy), "DATA": str(demo_assets.dataset_path),
           "OUT": str(out)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", FULL_DISK_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    stderr = (out / "full.stderr").read_text()
    kept = int((out / "kept").read_text())
    lines = stderr.strip().splitlines()
    assert (out / "full.rc").read_text().strip() == "2" and "Traceback" not in stderr, stderr[-3000:]
    assert re.fullmatch(rf"finetune-studio eval: no space left on {disk}/ev while writing results.jsonl; "
                        rf"{kept} results? kept, run the same command again to resume", lines[-1]), lines[-1]
    assert 0 < kept < 20
    assert (out / "again.rc").read_text().strip() == "0", (out / "again.stderr").read_text()[-3000:]
    assert f"resuming: {kept} of 20 results kept" in (out / "again.stderr").read_text()
    assert json.loads((out / "again.stdout").read_text())["complete"]
