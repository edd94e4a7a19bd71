"""`finetune-studio` on the command line, run the way a user runs it (a child process)."""

from __future__ import annotations

import json


from studio.core.config.settings import load_config


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
