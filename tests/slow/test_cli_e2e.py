"""`finetune-studio` on the command line, run the way a user runs it (a child process)."""

from __future__ import annotations

import json

import pytest

from studio.core.config.settings import load_config
from cli_shared import _fake_stopped_run  # noqa: F401  (shared with the other half)


def test_demo_builds_the_model_dataset_and_config(tmp_path, run_studio):
    folder = tmp_path / "my demo"
    result = run_studio("demo", "--output", folder)

    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "model" / "config.json").is_file()
    assert (folder / "model" / "tokenizer_config.json").is_file()
    assert list((folder / "model").glob("*.safetensors"))
    rows = (folder / "dataset.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 10 and all("messages" in json.loads(row) for row in rows)
    config = load_config(folder / "demo.toml")
    assert config.model.name_or_path == str((folder / "model").resolve())
    assert config.data.train_file == str((folder / "dataset.jsonl").resolve())
    # What the user is told: where things are, and how to train.
    assert str(folder / "demo.toml") in result.stdout
    assert "finetune-studio train" in result.stderr

    # The folder can be moved: the config refers to its model and data relative to itself.
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert load_config(moved / "demo.toml").model.name_or_path == str((moved / "model").resolve())


def test_demo_twice_keeps_the_built_demo(tmp_path, run_studio):
    folder = tmp_path / "demo"
    assert run_studio("demo", "--output", folder).returncode == 0
    weights = next((folder / "model").glob("*.safetensors"))
    built = weights.stat().st_mtime_ns
    second = run_studio("demo", "--output", folder)
    assert second.returncode == 0
    assert weights.stat().st_mtime_ns == built


def test_chat_with_a_missing_model_is_bad_input(tmp_path, run_studio):
    result = run_studio("chat", "--model", tmp_path / "no-model", "--prompt", "hi")
    assert result.returncode == 2
    assert str(tmp_path / "no-model") in result.stderr
    assert "Traceback" not in result.stderr


def test_data_inspect_names_a_missing_model_folder_without_hub_jargon(tmp_path, run_studio, demo_assets):
    result = run_studio("data", "inspect", demo_assets.dataset_path, "--model", tmp_path / "no-model")
    assert result.returncode == 2
    assert result.stderr.strip() == f"finetune-studio data inspect: --model {tmp_path / 'no-model'}: no such folder"


def test_data_inspect_of_a_folder_of_unlike_files_names_them(tmp_path, run_studio, demo_assets):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "chats.jsonl").write_text(demo_assets.dataset_path.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "settings.json").write_text('{"version": 2}', encoding="utf-8")
    result = run_studio("data", "inspect", folder)
    assert result.returncode == 2
    assert "its data files (chats.jsonl, settings.json) cannot be read as one dataset" in result.stderr
    assert "Open one of the files instead" in result.stderr


def test_data_inspect_offers_a_detected_mapping_without_claiming_it_was_applied(tmp_path, run_studio):
    data = tmp_path / "qa.csv"
    data.write_text("question,answer\nWhat is 2+2?,4\n", encoding="utf-8")
    result = run_studio("data", "inspect", data)
    assert result.returncode == 2
    assert "suggested:  prompt=question, completion=answer — not applied" in result.stdout
    assert "--columns prompt=question,completion=answer" in result.stdout
    applied = run_studio("data", "inspect", data, "--columns", "prompt=question,completion=answer")
    assert applied.returncode == 0, applied.stderr
    assert "mapping:    prompt=question, completion=answer" in applied.stdout


def _students_question(demo_assets) -> tuple[str, str]:
    """A demo question and its trained answer (one the 60-step demo run reproduces exactly)."""
    conversations = [json.loads(line)["messages"] for line in
                     demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()]
    return next((m[0]["content"], m[1]["content"]) for m in conversations
                if m[0]["content"].startswith("Do students"))


def test_merge_writes_a_standalone_model(trained_run, tmp_path, run_studio, demo_assets):
    output = tmp_path / "merged"
    result = run_studio("merge", trained_run, "--output", output)

    assert result.returncode == 0, result.stderr[-3000:]
    assert str(output) in result.stdout
    assert not output.with_name("merged.partial").exists()

    from transformers import AutoConfig, AutoTokenizer

    from studio.core.system.demo import CHAT_TEMPLATE

    config = AutoConfig.from_pretrained(str(output))
    assert config.model_type == "llama"
    assert list(output.glob("*.safetensors"))
    assert not (output / "adapter_config.json").exists()  # standalone: no adapter left to load
    assert AutoTokenizer.from_pretrained(str(output)).chat_template == CHAT_TEMPLATE

    # The merged model alone answers like base + adapter.
    question, answer = _students_question(demo_assets)
    chat = run_studio("chat", "--model", output, "--prompt", question, "--max-new-tokens", 60)
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert chat.stdout.strip() == answer


def test_chat_with_a_run_directory_gives_the_trained_answer(trained_run, demo_assets, run_studio):
    question, answer = _students_question(demo_assets)

    result = run_studio("chat", "--model", trained_run, "--prompt", question, "--max-new-tokens", 60)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == answer


def test_train_on_a_plain_text_file_completes_with_one_row_per_document(tmp_path, run_studio, demo_assets):
    from studio.core.config.settings import save_config
    from studio.core.runs.store import RunDirectory

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Nimbus Fiber 500 costs 450 TL a month.\nThe upgrade is free.\n\n"
                      "Support is open every day from 08:00 to 22:00.\n\n"
                      "A red modem light means: unplug it for thirty seconds.\n", encoding="utf-8")
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(corpus)
    config.training.max_steps = 2
    save_config(config, tmp_path / "text.toml")
    run = RunDirectory(tmp_path / "run")

    result = run_studio("train", tmp_path / "text.toml", "--output", run.path)

    assert result.returncode == 0, result.stderr[-3000:]
    events = run.events()
    started = next(e for e in events if e["event"] == "started")
    assert started["num_train_rows"] == 3  # the three blank-line separated documents
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "completed"




def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("resume", [["--resume"], ["--resume", "CKPT2"]])
def test_resuming_a_run_that_is_still_training_is_bad_input_and_touches_nothing(tmp_path, demo_assets, run_studio,
                                                                                 resume):
    run = _fake_stopped_run(demo_assets, tmp_path / "run")
    resume = [str(run.checkpoints_dir / "checkpoint-2") if arg == "CKPT2" else arg for arg in resume]
    lock = run.writer_lock()
    assert lock.acquire()  # this test process plays the live training process
    before = _snapshot(run.path)
    try:
        result = run_studio("train", run.config_path, "--output", run.path, *resume)
    finally:
        lock.release()

    assert result.returncode == 2, result.stderr[-3000:]
    assert "still training" in result.stderr and str(run.path) in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(run.path) == before, "no event, no set-aside move, no rewritten file"


def test_a_cli_run_writes_its_lines_to_train_log(trained_run):
    log = (trained_run / "train.log").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("step 1 loss ") for line in log) == 1
    assert any(line.startswith("step 60 loss ") for line in log)
    assert any(line.startswith("run completed at step 60") for line in log)  # the human end line, and the summary
    assert any(line.startswith("adapter:") for line in log)


def test_a_full_disk_while_saving_a_checkpoint_is_a_disk_failure_told_in_the_terminal_events_and_train_log(
        tmp_path, demo_assets, run_studio):
    import os

    from fault_injection import ENV_VAR
    from studio.core.runs.store import RunDirectory

    from studio.core.config.settings import save_config

    run = RunDirectory(tmp_path / "run")
    config = load_config(demo_assets.config_path)
    config.training.save_steps = 2
    save_config(config, tmp_path / "config.toml")
    result = run_studio("train", tmp_path / "config.toml", "--output", run.path, "--max-steps", 4,
                        env={**os.environ, ENV_VAR: "disk_full_at_checkpoint=4"})

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    failed = run.events()[-1]
    assert failed["event"] == "failed" and failed["kind"] == "disk"
    assert failed["message"].startswith(f"no space left on {run.path} while saving checkpoint-4; checkpoint-2 is "
                                        "intact; free ")
    assert f"finetune-studio train: {failed['message']}" in result.stderr.splitlines()
    log = run.log_path.read_text(encoding="utf-8")
    assert f"finetune-studio train: {failed['message']}" in log
    assert "OSError: [Errno 28]" in log, "the cause, for whoever reads the log"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2"]


def test_a_full_disk_in_the_safetensors_writer_is_the_same_disk_failure_and_leaves_no_staged_checkpoint(
        tmp_path, demo_assets):
    """Issue 21 item 8: safetensors reports a full disk as its own SafetensorError (os error 28), not an OSError;
    it ended as `failed (crash)` with a traceback and left checkpoints/.staging until the next resume."""
    import os
    import shlex
    import subprocess
    import sys

    from fault_injection import ENV_VAR, FULL_DISK_VAR
    from studio.core.config.settings import save_config
    from studio.core.runs.store import RunDirectory

    run = RunDirectory(tmp_path / "run")
    config = load_config(demo_assets.config_path)
    config.training.save_steps = 2
    save_config(config, tmp_path / "config.toml")
    full = tmp_path / "full-disk"  # a 16 KiB tmpfs in a mount namespace of the command's own
    full.mkdir()
    command = (f"mount -t tmpfs -o size=16k tmpfs {shlex.quote(str(full))} && exec {shlex.quote(sys.executable)} "
               f"-m studio train {tmp_path / 'config.toml'} --output {run.path} --max-steps 4")
    result = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=600,
                            env={**os.environ, ENV_VAR: "safetensors_full_at_checkpoint=4", FULL_DISK_VAR: str(full)})

    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    failed = run.events()[-1]
    assert failed["event"] == "failed" and failed["kind"] == "disk", failed
    assert failed["message"].startswith(f"no space left on {run.path} while saving checkpoint-4; checkpoint-2 is "
                                        "intact; free ")
    assert failed["message"].endswith(" and Resume")
    assert f"finetune-studio train: {failed['message']}" in result.stderr.splitlines()
    assert "SafetensorError" in run.log_path.read_text(encoding="utf-8"), "the cause, for whoever reads the log"
    assert not (run.checkpoints_dir / ".staging").exists(), "the torn checkpoint goes at once"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2"]


# ------------------------------------------------------------------ what the terminal shows (issue 12, item 16)


def test_train_ends_with_a_summary_and_the_next_commands_without_bars_or_library_warnings(tmp_path, run_studio,
                                                                                          demo_assets):
    run_dir = tmp_path / "my run"
    result = run_studio("train", demo_assets.config_path, "--output", run_dir, "--max-steps", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "training 2 steps on 10 rows" in out
    assert f"step 2: checkpoint saved in {run_dir / 'checkpoints' / 'checkpoint-2'}" in out
    assert "run completed at step 2 of 2, final loss " in out
    assert f"adapter:    {run_dir / 'adapter'}" in out and "time taken: " in out
    quoted = f"'{run_dir}'"  # a folder name with a space is pasted as one word
    assert f"finetune-studio chat --model {quoted}" in out
    assert f"finetune-studio merge {quoted} --output '{tmp_path / 'my run-merged'}'" in out
    assert f"finetune-studio export gguf {quoted} --output '{tmp_path / 'my run-gguf' / 'my run.gguf'}'" in out
    assert "{" not in out, "no raw JSON event lines"
    both = out + result.stderr
    assert "Loading weights" not in both and "it/s]" not in both, "no tqdm bars"
    assert "Warning" not in both, "a clean run prints no warning (the FutureWarning from inside PEFT is gone)"

    chat = run_studio("chat", "--model", run_dir, "--prompt", "hello", "--max-new-tokens", 2)
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert "Loading weights" not in chat.stderr and "Warning" not in chat.stderr


def test_data_inspect_counts_tokens_against_the_configs_max_length_and_responses_setting(tmp_path, run_studio,
                                                                                          demo_assets):
    from studio.core.config.settings import RunConfig, save_config

    def tokens(*extra):
        result = run_studio("data", "inspect", demo_assets.dataset_path, "--json", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)["tokens"]

    config = load_config(demo_assets.config_path)
    config.training.max_length, config.data.train_on_responses_only = 32, False
    short = tmp_path / "short.toml"
    save_config(config, short)

    default = tokens("--model", demo_assets.model_dir)
    assert default["max_length"] == RunConfig().training.max_length  # a new run's, not a literal of its own
    from_config = tokens("--config", short)  # the config's model counts the tokens
    assert from_config["max_length"] == 32 and from_config["truncated_rows"] == 10  # every demo row is longer
    assert from_config["trained_tokens"] == from_config["total_tokens"] > default["trained_tokens"]
    assert tokens("--config", short, "--max-length", 64)["max_length"] == 64, "the option wins over the config"

    missing = run_studio("data", "inspect", demo_assets.dataset_path, "--config", tmp_path / "nope.toml")
    assert missing.returncode == 2 and str(tmp_path / "nope.toml") in missing.stderr
    assert "Traceback" not in missing.stderr
