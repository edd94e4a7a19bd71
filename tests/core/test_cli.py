"""`finetune-studio` on the command line, run the way a user runs it (a child process)."""

from __future__ import annotations

import json
import re

import pytest

from studio.core.config.settings import load_config
from cli_shared import _fake_stopped_run  # noqa: F401  (shared with the other half)


def test_help_lists_the_subcommands(run_studio):
    result = run_studio("--help")
    assert result.returncode == 0
    for command in ("demo", "train", "chat", "merge"):
        assert command in result.stdout


def test_train_with_a_missing_config_is_bad_input_naming_it(tmp_path, run_studio):
    missing = tmp_path / "nope.toml"
    result = run_studio("train", missing, "--output", tmp_path / "run")
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_subcommand_is_refused(run_studio):
    result = run_studio("fly")
    assert result.returncode == 2
    assert "fly" in result.stderr


def test_merge_of_a_folder_without_an_adapter_is_bad_input(tmp_path, run_studio):
    result = run_studio("merge", tmp_path, "--output", tmp_path / "merged")
    assert result.returncode == 2
    assert "adapter" in result.stderr
    assert not (tmp_path / "merged").exists()


def test_a_missing_config_file_reads_path_then_reason_and_json_still_gets_a_document(tmp_path, run_studio):
    missing = tmp_path / "nope.toml"
    result = run_studio("estimate", missing, "--json")
    assert result.returncode == 2
    assert result.stderr.strip() == f"finetune-studio estimate: {missing}: cannot be read: No such file or directory"
    assert json.loads(result.stdout) == {"ok": False, "error": f"{missing}: cannot be read: No such file or directory"}


def test_the_terminal_shows_evaluation_progress_and_its_result():
    from studio.core.train.report import event_line
    from studio.core.runs.events import make_event

    lines = [event_line(make_event("evaluating", step=8, done=3, total=9)),
             event_line(make_event("evaluating", step=8, done=1, total=None)),  # an eval set without a length
             event_line(make_event("eval", step=8, eval_loss=1.23456))]
    assert lines == [
        "evaluating at step 8: 3/9 batches", "evaluating at step 8: 1 batch", "eval step 8 loss 1.2346"]


def test_data_inspect_reads_a_plain_text_file_split_at_blank_lines_or_one_document_per_file(tmp_path, capsys):
    from studio.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A first paragraph.\n\nA second one,\non two lines.\n", encoding="utf-8")
    assert main(["data", "inspect", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "unsupported file type" not in out
    assert "format:     text — a plain text file" in out and "rows:       2 usable, 0 bad" in out
    assert main(["data", "inspect", str(corpus), "--text-split", "file", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "text" and report["rows"] == 1 and report["ok"]


def _pickle_only_model(demo_assets, folder):
    """The demo model with its weights saved as pytorch_model.bin instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(demo_assets.model_dir, folder)
    weights = {}
    for path in folder.glob("*.safetensors"):
        weights.update(load_file(str(path)))
        path.unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def _unknown_architecture_model(demo_assets, folder):
    import shutil

    shutil.copytree(demo_assets.model_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "nimbus_llm_v9"
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("case", "key", "reason"),
    [
        ("targets", "lora.target_modules = ['q_proj', 'qq_proj']",
         "'qq_proj' matches no layer of this model; its linear layers are q_proj, k_proj"),
        ("pickle", "model.name_or_path", "pytorch_model.bin: pickle weights are not loaded (a pickle can run code); "
                                         "convert them once to safetensors with `finetune-studio convert"),
        ("architecture", "model.name_or_path", "unknown architecture: its config.json has model_type 'nimbus_llm_v9'"),
        ("batch", "training.per_device_train_batch_size = 1000000000", "must be at most 1024"),
        ("learning_rate", "training.learning_rate = 0.0", "must be above 0.0"),
    ],
)
def test_train_refuses_what_cannot_train_before_a_run_folder_exists(tmp_path, capsys, demo_assets, case, key,
                                                                    reason):
    from studio.cli import main
    from studio.core.config.settings import save_config

    config = load_config(demo_assets.config_path)
    if case == "targets":
        config.lora.target_modules = ["q_proj", "qq_proj"]
    elif case == "pickle":
        config.model.name_or_path = str(_pickle_only_model(demo_assets, tmp_path / "pickled"))
    elif case == "architecture":
        config.model.name_or_path = str(_unknown_architecture_model(demo_assets, tmp_path / "alien"))
    save_config(config, tmp_path / "run.toml")
    text = (tmp_path / "run.toml").read_text(encoding="utf-8")
    if case in ("batch", "learning_rate"):  # values validation refuses are written by hand, as a user would
        name, value = key.split(".")[1].split(" = ")
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
        assert count == 1
    (tmp_path / "run.toml").write_text(text, encoding="utf-8")
    run = tmp_path / "run"

    assert main(["train", str(tmp_path / "run.toml"), "--output", str(run)]) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("finetune-studio train: ") and key in err and reason in err, err
    assert not run.exists(), "bad input costs a message, not a failed run in the history"




def test_a_window_run_whose_stdout_is_train_log_gets_each_line_once(tmp_path):
    """The window's child prints into train.log already (the supervisor redirects stdout there)."""
    import subprocess
    import sys

    from studio.core.runs.store import RunDirectory

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    code = ("import sys; from pathlib import Path; from studio.core.train.child import RunLog; "
            "from studio.core.runs.store import RunDirectory; log = RunLog(RunDirectory(Path(sys.argv[1]))); log.say('step 1 loss 2.0'); log.close()")
    with open(run.log_path, "ab") as stdout:
        subprocess.run([sys.executable, "-c", code, str(run.path)], stdout=stdout, check=True)
    assert run.log_path.read_text(encoding="utf-8") == "step 1 loss 2.0\n"

    subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, check=True)  # a terminal run
    assert run.log_path.read_text(encoding="utf-8") == "step 1 loss 2.0\n" * 2


def test_a_full_disk_still_gets_its_message_into_train_log_when_the_traceback_does_not_fit(tmp_path, capsys):
    import errno

    from studio.core.train.child import EXIT_INTERNAL, RunLog, record_failure
    from studio.core.train.failures import DiskFullError, failure_event

    class NearlyFullFile:  # room for a short line, not for a traceback
        def __init__(self):
            self.text = ""

        def write(self, text):
            if len(text) > 300:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.text += text

        def flush(self):
            pass

    def emit(event):  # the events file is refused too
        raise OSError(errno.ENOSPC, "No space left on device")

    log = RunLog(None)
    log._file = NearlyFullFile()
    try:
        raise DiskFullError(tmp_path, saving="checkpoint-4", intact=tmp_path / "checkpoints" / "checkpoint-2",
                            needed_bytes=3_500_000)
    except DiskFullError as error:
        status = record_failure(failure_event(error, None), emit, log)

    assert status == EXIT_INTERNAL
    message = (f"no space left on {tmp_path} while saving checkpoint-4; checkpoint-2 is intact; free 3.5 MB and "
               "Resume")
    assert message in log._file.text
    assert capsys.readouterr().err.strip() == f"finetune-studio train: {message}"


def test_a_resume_on_a_still_full_disk_ends_with_one_line_and_leaves_no_temp_config(tmp_path, demo_assets,
                                                                                     monkeypatch, capsys):
    import errno
    from pathlib import Path

    from studio.cli import main

    run = _fake_stopped_run(demo_assets, tmp_path / "run")
    before = run.config_path.read_bytes()
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            real_write_text(self, "par")  # a torn write: part of the file, then the error
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    status = main(["train", str(run.config_path), "--output", str(run.path), "--resume", "--max-steps", "9"])

    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"finetune-studio train: no space left on {run.path} while saving "
                                        "run.toml; checkpoint-4 is intact; free some space and Resume"]
    assert run.config_path.read_bytes() == before
    assert not (run.path / "run.toml.tmp").exists()
    assert run.events()[-1]["event"] == "failed" and run.events()[-1]["kind"] == "disk"
    assert run.busy_message() is None, "the lock went with the ended run"


class _FakeRun:
    """The parts of a RunDirectory the train report reads."""

    def __init__(self, path, checkpoint=None):
        self.path, self.config_path, self.log_path = path, path / "run.toml", path / "train.log"
        self._checkpoint = checkpoint

    def latest_checkpoint(self):
        return self._checkpoint


def _report_lines(capsys, run, *events):
    from studio.core.train.report import TrainReport
    from studio.core.runs.events import make_event

    report = TrainReport(run)
    for kind, fields in events:
        report(make_event(kind, **fields))
    return capsys.readouterr().out.splitlines()


def test_a_stopped_run_says_how_to_continue_and_names_the_adapter_kept_by_early_stopping(tmp_path, capsys):
    run = _FakeRun(tmp_path / "run")
    lines = _report_lines(capsys, run, ("started", {"total_steps": 60, "num_train_rows": 10, "resumed_from": None}),
                          ("finished", {"status": "stopped", "step": 30, "final_loss": 0.5, "adapter": "A",
                                        "adapter_step": 20, "best_eval_loss": 0.25, "message": ""}))
    assert lines[1] == "run stopped at step 30 of 60, final loss 0.5000"
    assert "adapter:    A (from step 20, eval loss 0.2500)" in lines
    assert f"continue training: finetune-studio train {run.config_path} --output {run.path} --resume" in lines


def test_a_failed_run_is_one_human_line_and_a_crash_with_a_checkpoint_offers_resume(tmp_path, capsys):
    run = _FakeRun(tmp_path / "run", checkpoint=tmp_path / "run" / "checkpoints" / "checkpoint-4")
    lines = _report_lines(capsys, run, ("failed", {"kind": "crash", "message": "RuntimeError: boom",
                                                   "hint": "The traceback is in the run's train.log."}))
    assert lines[:2] == ["run failed (crash): RuntimeError: boom",
                         "  what to do: The traceback is in the run's train.log."]
    assert lines[2].startswith(f"run folder: {run.path} (failed after ")
    assert lines[3] == f"continue from its latest checkpoint: finetune-studio train {run.config_path} --output " \
                       f"{run.path} --resume"
    bad_data = _report_lines(capsys, run, ("failed", {"kind": "data", "message": "d.jsonl:3: bad", "hint": "Fix it"}))
    assert not any("--resume" in line for line in bad_data), "retraining bad data from a checkpoint fixes nothing"
    full_disk = _report_lines(capsys, run, ("failed", {"kind": "disk", "message": "no space left", "hint": "Free"}))
    assert full_disk[-1].endswith("--resume"), "after freeing space, the run goes on from its checkpoint"


def test_a_run_in_the_studios_runs_folder_is_exported_where_the_export_dialog_exports(capsys, studio_home):
    from pathlib import Path

    from studio.core.system.paths import runs_dir

    run = _FakeRun(runs_dir() / "demo-3")
    lines = _report_lines(capsys, run, ("finished", {"status": "completed", "step": 2, "final_loss": None,
                                                     "adapter": "A", "adapter_step": 2, "message": ""}))
    exports = Path.home() / "finetune-studio-exports"  # the Export dialog's default folder
    assert any(line.endswith(f"--output {exports / 'demo-3-merged'}") for line in lines), lines
    assert any(line.endswith(f"--output {exports / 'demo-3-gguf' / 'demo-3.gguf'}") for line in lines), lines


def test_every_option_of_every_command_has_help_text():
    import argparse

    from studio.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [f"{parser.prog} {action.option_strings[0]}" for parser in parsers(build_parser())
               for action in parser._actions
               if action.option_strings and not action.help and not isinstance(action, argparse._HelpAction)]
    assert missing == []


def test_export_gguf_and_the_export_dialog_share_one_default_type():
    from studio.cli import build_parser
    from studio.core.export.gguf import DEFAULT_GGUF_TYPE

    args = build_parser().parse_args(["export", "gguf", "m", "--output", "x.gguf"])
    assert args.gguf_type == DEFAULT_GGUF_TYPE == "auto"


def test_estimate_names_a_local_model_by_what_it_is_not_its_folder(tmp_path, run_studio, demo_assets):
    from studio.cli import _model_title
    from studio.core.models.source import ModelConfigSource

    def title(folder, **config):
        return _model_title(ModelConfigSource({"model_type": "qwen2", **config}, "folder", folder / "config.json",
                                              folder.name))

    assert title(tmp_path / "Qwen2.5-0.5B-Instruct") == "Qwen2.5-0.5B-Instruct", "a folder named for its model"
    assert title(tmp_path / "model", _name_or_path="Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert title(tmp_path / "merged", _name_or_path="/home/someone/ckpt/support-bot/") == "support-bot"
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / ("a" * 40)
    assert title(snapshot) == "Qwen/Qwen2.5-0.5B", "a folder in an HF cache names its Hub id"
    assert title(tmp_path / "model") == f"the qwen2 model in {tmp_path / 'model'}"

    result = run_studio("estimate", demo_assets.config_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"VRAM estimate for the llama model in {demo_assets.model_dir}, ")
