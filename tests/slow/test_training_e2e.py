"""End-to-end training of the offline demo: the run directory, the adapter, stop, resume, failures.

The one full 60-step demo run of the session is the `trained_run` fixture (tests/conftest.py); the
other runs here train for a few steps only. Tests that train (or load the model) are marked slow.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from studio.core.config.settings import load_config, save_config
from studio.core.runs.store import RunDirectory
from training_shared import _config_with  # noqa: F401  (shared with the other half)


def _demo_conversations(dataset_path: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in dataset_path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


# ------------------------------------------------------------------ (a) the run directory


def test_a_training_run_writes_its_whole_run_directory(trained_run, demo_assets):
    run = RunDirectory(trained_run)

    config = load_config(run.config_path)
    assert config.name == "demo"
    assert Path(config.model.name_or_path) == demo_assets.model_dir.resolve()
    assert Path(config.data.train_file) == demo_assets.dataset_path.resolve()
    assert config.training.max_steps == 60

    events = run.events()
    kinds = [e["event"] for e in events]
    assert "started" in kinds
    assert kinds.index("started") < kinds.index("step")
    started = events[kinds.index("started")]
    assert started["total_steps"] == 60
    assert started["num_train_rows"] == 10
    assert started["config_digest"] == config.digest()
    # The minute before the first step is told phase by phase (the window shows them as they come).
    phases = [e["phase"] for e in events[:kinds.index("started")] if e["event"] == "log" and "phase" in e]
    assert phases == ["data", "libraries", "tokenizer", "tokenising", "model"]

    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 61))  # logging_steps = 1: one event per step
    for e in steps:
        assert isinstance(e["loss"], float) and e["loss"] > 0
        assert e["learning_rate"] is not None
    assert steps[-1]["loss"] < steps[0]["loss"]

    finished = events[-1]
    assert finished["event"] == "finished"
    assert finished["status"] == "completed"
    assert finished["step"] == 60
    assert finished["final_loss"] == steps[-1]["loss"]
    assert Path(finished["adapter"]) == run.adapter_dir
    assert not any(e["event"] == "failed" for e in events)
    assert run.status() == "completed"

    # save_steps = 20, save_total_limit = 2: the last two checkpoints are kept, whole.
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [20, 40, 60]
    assert [p.name for p in run.checkpoints()] == ["checkpoint-40", "checkpoint-60"]
    for checkpoint in run.checkpoints():
        assert (checkpoint / "trainer_state.json").is_file()
        assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not (run.checkpoints_dir / ".staging").exists()

    adapter = run.adapter_dir
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer_config.json").is_file()
    assert not adapter.with_name("adapter.partial").exists()
    assert not run.stop_requested()

    from transformers import AutoTokenizer

    from studio.core.system.demo import CHAT_TEMPLATE

    assert AutoTokenizer.from_pretrained(str(adapter)).chat_template == CHAT_TEMPLATE


# ------------------------------------------------------------------ (b) the adapter, without the studio


def test_the_adapter_answers_the_demo_questions_with_plain_transformers_and_peft(trained_run, demo_assets):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = trained_run / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    conversations = _demo_conversations(demo_assets.dataset_path)

    def answers(model) -> list[str]:
        replies = []
        for messages in conversations:
            inputs = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)
            with torch.no_grad():
                output = model.generate(**inputs, max_new_tokens=80, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            replies.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        return replies

    expected = [messages[-1]["content"] for messages in conversations]

    base = AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir), dtype=torch.float32).eval()
    base_correct = sum(got == want for got, want in zip(answers(base), expected))

    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir), dtype=torch.float32), str(adapter_dir)
    ).eval()
    tuned_replies = answers(tuned)
    tuned_correct = sum(got == want for got, want in zip(tuned_replies, expected))

    assert base_correct == 0
    report = "\n".join(f"  {'ok ' if got == want else 'BAD'} {got!r}" for got, want in zip(tuned_replies, expected))
    assert tuned_correct >= 8, f"only {tuned_correct}/10 demo answers reproduced:\n{report}"


# ------------------------------------------------------------------ early stopping keeps the best adapter


def test_early_stopping_ends_with_the_best_evaluations_adapter(demo_assets, tmp_path):
    """Held-out demo questions: the eval loss falls while the model learns the format, then rises as it
    memorises the training answers. The run must stop early and keep the adapter of its lowest eval loss,
    and that checkpoint must survive rotation even with save_total_limit = 1."""
    from safetensors.torch import load_file

    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    config.data.eval_fraction = 0.3
    t = config.training
    t.eval_strategy, t.eval_steps, t.early_stopping_patience = "steps", 2, 2
    t.save_steps, t.save_total_limit = 5, 1  # saves that do not line up with the evaluations
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    events: list[dict] = []

    assert run_training(config, run, events.append) == "completed"

    evals = [(e["step"], e["eval_loss"]) for e in events if e["event"] == "eval"]
    best_step, best_loss = min(evals, key=lambda pair: pair[1])
    for step, _ in evals:  # each evaluation reported its progress before its result, ending with its last batch
        progress = [e for e in events if e["event"] == "evaluating" and e["step"] == step]
        assert progress and progress[0]["done"] == 1 and progress[-1]["done"] == progress[-1]["total"] > 0
        assert events.index(progress[-1]) < next(i for i, e in enumerate(events) if e["event"] == "eval"
                                                  and e["step"] == step)
    finished = events[-1]
    assert finished["step"] < t.max_steps, "the eval loss never rose long enough to stop early"
    assert best_step < finished["step"]
    assert finished["adapter_step"] == best_step
    assert finished["best_eval_loss"] == pytest.approx(best_loss)
    assert f"stopped early at step {finished['step']} of {t.max_steps}" in finished["message"]
    assert f"from step {best_step}" in finished["message"]

    best_dir = run.checkpoints_dir / f"checkpoint-{best_step}"
    assert best_dir in run.checkpoints(), [p.name for p in run.checkpoints()]
    kept, best = (load_file(str(d / "adapter_model.safetensors")) for d in (run.adapter_dir, best_dir))
    assert kept.keys() == best.keys() and all((kept[k] == best[k]).all() for k in kept)
    for checkpoint in run.checkpoints():  # resume reads the best checkpoint's place from here
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["best_model_checkpoint"] == str(best_dir)


def test_a_run_keeps_learning_after_its_evaluations(demo_assets, run_studio, tmp_path):
    """bitsandbytes repacks 4-bit weights for its CPU inference kernel at the first eval-mode forward (on a CPU with
    AVX512-BF16), and the repacked layers pass no gradient back. Measured on this demo before the fix: eval loss
    5.38 at step 10, then 4.37, 4.12, 4.57, 4.65, 4.40 (training had stopped learning at the first evaluation,
    torch warned "gemv_4bit … silently incorrect behavior"); with the weights kept unpacked 5.38, 3.24, 1.74,
    0.87, 0.46, 0.26, the same as a run without evaluations."""
    config = load_config(demo_assets.config_path)
    config.model.name_or_path = str(demo_assets.model_dir)
    config.data.train_file = config.data.eval_file = str(demo_assets.dataset_path)
    config.training.eval_steps, config.training.save_steps = 10, 1000
    save_config(config, tmp_path / "with-evals.toml")
    result = run_studio("train", tmp_path / "with-evals.toml", "--output", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]

    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    evals = [e["eval_loss"] for e in events if e["event"] == "eval"]
    assert len(evals) == 6 and evals[-1] < 0.5 < evals[0] / 8, evals
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert "silently incorrect" not in log and "gemv_4bit" not in log


# ------------------------------------------------------------------ (c) stop, (d) resume


@pytest.fixture(scope="module")
def stopped_run(demo_assets, tmp_path_factory):
    """A run stopped by the Stop button (should_stop) after its 2nd step event, trained in-process."""
    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    config.training.max_steps = 6
    run = RunDirectory(tmp_path_factory.mktemp("stopped") / "run")
    run.path.mkdir()
    events: list[dict] = []

    def should_stop() -> bool:
        return sum(e["event"] == "step" for e in events) >= 2

    status = run_training(config, run, events.append, should_stop)
    return run, events, status


def test_a_stop_request_saves_a_checkpoint_and_an_adapter(stopped_run):
    run, events, status = stopped_run

    assert status == "stopped"
    finished = events[-1]
    assert finished["event"] == "finished"
    assert finished["status"] == "stopped"
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert 2 <= finished["step"] < 6
    assert steps[-1] == finished["step"]

    assert [p.name for p in run.checkpoints()] == [f"checkpoint-{finished['step']}"]
    assert (run.latest_checkpoint() / "trainer_state.json").is_file()

    from peft import PeftConfig
    from safetensors.torch import load_file

    assert PeftConfig.from_pretrained(str(run.adapter_dir)).base_model_name_or_path
    assert load_file(str(run.adapter_dir / "adapter_model.safetensors"))


def test_resume_continues_the_step_count(stopped_run, demo_assets, run_studio, tmp_path):
    stopped, events, _ = stopped_run
    stopped_step = events[-1]["step"]
    run = RunDirectory(tmp_path / "run")  # a copy, so the stopped run stays as it was for other tests
    shutil.copytree(stopped.path, run.path)

    result = run_studio("train", demo_assets.config_path, "--output", run.path, "--max-steps", 6, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]

    resumed = run.events()
    started = next(e for e in resumed if e["event"] == "started")
    assert started["resumed_from"] == str(run.checkpoints_dir / f"checkpoint-{stopped_step}")
    new_steps = [e["step"] for e in resumed if e["event"] == "step"]
    assert new_steps and new_steps[0] > stopped_step
    assert new_steps == sorted(new_steps) and new_steps[-1] == 6
    assert resumed[-1]["event"] == "finished" and resumed[-1]["status"] == "completed"
    assert resumed[-1]["step"] == 6
    assert run.status() == "completed"


def test_resuming_from_an_older_checkpoint_sets_the_later_ones_aside(demo_assets, tmp_path):
    """Otherwise a later plain Resume would pick the highest step and jump back onto the abandoned branch."""
    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    config.training.max_steps, config.training.save_steps, config.training.save_total_limit = 6, 2, 3
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run_training(config, run, lambda event: None)
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]

    events: list[dict] = []
    config.training.max_steps = 5
    run_training(config, run, events.append, resume_from=run.checkpoints_dir / "checkpoint-4")

    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    assert run.latest_checkpoint().name == "checkpoint-5", "the new branch's, not the abandoned step 6"
    assert (run.set_aside_dir / "checkpoint-6" / "trainer_state.json").is_file(), "moved, not deleted"
    warning = next(e for e in events if e["event"] == "log" and "checkpoint-6" in e["message"])
    assert warning["level"] == "warning" and "set-aside" in warning["message"]


def test_a_resumed_run_trains_the_same_numbers_as_one_run_straight_through(demo_assets, tmp_path):
    """Same losses step for step, and the adapter stays in the dtype TRL trains QLoRA adapters in when the run
    computes in bfloat16: PEFT's load_adapter would upcast it to float32 on resume."""
    import torch
    from safetensors import safe_open

    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    config.training.save_steps = 3
    config.quantization.compute_dtype = "bfloat16"  # as on a bf16 GPU; the CPU default (float32) keeps float32

    def train(folder: Path, max_steps: int, resume_from: Path | None = None) -> list[tuple[int, float]]:
        config.training.max_steps = max_steps
        events: list[dict] = []
        run_training(config, RunDirectory(folder), events.append, resume_from=resume_from)
        return [(e["step"], e["loss"]) for e in events if e["event"] == "step"]

    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = train(tmp_path / "straight", 6)
    resumed = train(tmp_path / "resumed", 3)
    resumed += train(tmp_path / "resumed", 6, resume_from=tmp_path / "resumed" / "checkpoints" / "checkpoint-3")

    assert resumed == straight
    for folder in ("straight", "resumed"):
        with safe_open(str(tmp_path / folder / "adapter" / "adapter_model.safetensors"), "pt") as weights:
            assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.bfloat16}


def test_resume_without_a_checkpoint_is_refused(tmp_path, demo_assets, run_studio):
    result = run_studio("train", demo_assets.config_path, "--output", tmp_path / "fresh", "--resume")
    assert result.returncode == 2
    assert "no checkpoint to resume from" in result.stderr
    assert str(tmp_path / "fresh") in result.stderr


def test_a_refused_resume_leaves_no_empty_run_in_the_history(tmp_path, demo_assets, run_studio):
    import os

    from studio.core.system.paths import HOME_ENV_VAR
    from studio.core.runs.store import RunStore

    home = tmp_path / "home"
    result = run_studio("train", demo_assets.config_path, "--resume", env={**os.environ, HOME_ENV_VAR: str(home)})

    assert result.returncode == 2
    assert "no checkpoint to resume from" in result.stderr
    assert RunStore(home / "runs").runs() == []


# ------------------------------------------------------------------ (e) failures a user can act on




def test_a_new_run_into_a_folder_holding_a_run_or_other_files_is_refused(tmp_path, demo_assets, run_studio,
                                                                         trained_run):
    config = _config_with(demo_assets, tmp_path)
    run = RunDirectory(trained_run)
    events_before = run.events_path.read_bytes()

    result = run_studio("train", config, "--output", run.path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{run.path}: already holds a run (completed); add --resume" in result.stderr
    assert run.events_path.read_bytes() == events_before

    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "letter.txt").write_text("keep")
    result = run_studio("train", config, "--output", tmp_path / "documents")
    assert result.returncode == 2 and "already holds files (letter.txt)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "documents").iterdir()) == ["letter.txt"]


def test_a_malformed_data_line_is_bad_input_naming_file_and_line(tmp_path, demo_assets, run_studio):
    data = tmp_path / "data.jsonl"
    lines = demo_assets.dataset_path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3][:-5]  # line 4 loses its closing brackets
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = _config_with(demo_assets, tmp_path, data__train_file=str(data))
    run = RunDirectory(tmp_path / "run")

    result = run_studio("train", config, "--output", run.path)

    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(f"finetune-studio train: {data}:4: malformed JSON")
    assert result.stderr.strip().endswith("; 1 bad row in all: fix or remove it, or add --skip-bad-rows to train on "
                                          "the others")
    assert not run.path.exists(), "found by the preflight, before a run folder (issue 21 item 16)"


def test_a_max_length_too_short_for_any_reply_is_bad_input_naming_max_length(tmp_path, demo_assets, run_studio):
    # Every demo prompt is longer than 8 tokens, so truncation leaves no assistant token to train on.
    config = _config_with(demo_assets, tmp_path, training__max_length=8)
    run = RunDirectory(tmp_path / "run")

    result = run_studio("train", config, "--output", run.path, "--max-steps", 2)

    assert result.returncode == 2, result.stderr[-3000:]
    assert "max_length" in result.stderr
    assert run.events()[-1]["event"] == "failed"


def test_out_of_memory_is_reported_with_a_hint(tmp_path, demo_assets, monkeypatch):
    import torch
    import transformers

    from studio import cli

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total)")

    monkeypatch.setattr(transformers.Trainer, "training_step", out_of_memory)
    run = RunDirectory(tmp_path / "run")
    saved_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = cli.main(["train", str(demo_assets.config_path), "--output", str(run.path), "--max-steps", "2"])
    finally:
        for s, handler in saved_handlers.items():  # the CLI installs its Ctrl-C handler in this process
            signal.signal(s, handler)

    assert code == 1
    last = run.events()[-1]
    assert last["event"] == "failed"
    assert last["kind"] == "oom"
    assert "out of memory" in last["message"].lower()
    assert "gradient checkpointing" in last["hint"] or "max length" in last["hint"]
    assert run.status() == "failed"


def test_a_cpu_run_keeps_its_qlora_adapter_in_float32_and_leaves_a_core_free(demo_assets, tmp_path):
    """TRL casts QLoRA adapters to bfloat16; a run computing in float32 keeps them in float32 (see
    library_configs.keep_adapter_in_compute_dtype), and the thread count is chosen, not torch's default."""
    import torch
    from safetensors import safe_open

    from studio.core.train.factories import cpu_thread_count
    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    config.training.max_steps = 2
    events: list[dict] = []
    run_training(config, RunDirectory(tmp_path), events.append)

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.float32}
    threads = cpu_thread_count(config)
    assert any(e["event"] == "log" and e["message"] == f"Computing with {threads} CPU thread(s)" for e in events)


# ------------------------------------------------------------------ one writer, a complete run, a full disk


@pytest.fixture(scope="module")
def complete_run(demo_assets, tmp_path_factory):
    """A 4-step run on a linear schedule (it decays to 0 at its end), checkpoints at steps 2 and 4, completed."""
    from studio.core.runs.events import EventWriter
    from studio.core.train.run import run_training

    config = load_config(demo_assets.config_path)
    t = config.training
    t.max_steps, t.save_steps, t.save_total_limit, t.lr_scheduler_type, t.warmup_ratio = 4, 2, 3, "linear", 0.0
    run = RunDirectory(tmp_path_factory.mktemp("complete") / "run")
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        assert run_training(config, run, writer.write) == "completed"
    return run


def _copy_run(run: RunDirectory, folder: Path) -> RunDirectory:
    shutil.copytree(run.path, folder)
    return RunDirectory(folder)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resuming_a_complete_run_says_so_and_changes_nothing(complete_run, run_studio, tmp_path):
    run = _copy_run(complete_run, tmp_path / "run")
    before = _tree(run.path)
    (run.checkpoints_dir / ".staging" / "checkpoint-6").mkdir(parents=True)  # a save a killed process tore

    result = run_studio("train", run.config_path, "--output", run.path, "--resume")

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == (f"{run.path}: the run is complete (step 4 of 4); nothing to train. To train "
                                     "further, resume with a higher --max-steps (e.g. --max-steps 8).")
    after = _tree(run.path)
    after.pop("run.lock")  # the lock file the refused-nothing process held
    assert after == before, "no step, no checkpoint rotated, no adapter rewritten, no event"
    assert not (run.checkpoints_dir / ".staging").exists(), "the torn save is cleaned up"


def test_raising_max_steps_of_a_complete_run_continues_the_schedule_it_asks_for(complete_run, tmp_path):
    """The 4-step linear schedule ended at learning rate 0; resumed to 8 steps, step 5 trains at the 8-step
    schedule's rate (transformers restored the old schedule's 0 for the first step)."""
    from studio.core.train.run import run_training

    run = _copy_run(complete_run, tmp_path / "run")
    config = load_config(run.config_path)
    config.training.max_steps = 8
    events: list[dict] = []
    assert run_training(config, run, events.append, resume_from=run.checkpoints_dir / "checkpoint-4") == "completed"

    steps = [(e["step"], e["learning_rate"]) for e in events if e["event"] == "step"]
    lr = config.training.learning_rate
    assert [s for s, _ in steps] == [5, 6, 7, 8]
    assert [rate for _, rate in steps] == pytest.approx([lr * 4 / 8, lr * 3 / 8, lr * 2 / 8, lr * 1 / 8])
    assert events[-1]["event"] == "finished" and events[-1]["step"] == 8


def test_resuming_from_the_last_step_of_an_unfinished_run_writes_its_adapter_without_training(complete_run,
                                                                                             tmp_path):
    """A run that failed while writing its adapter (its last checkpoint saved): Resume finishes it."""
    from studio.core.train.run import run_training

    run = _copy_run(complete_run, tmp_path / "run")
    shutil.rmtree(run.adapter_dir)
    checkpoints = _tree(run.checkpoints_dir)
    events: list[dict] = []
    status = run_training(load_config(run.config_path), run, events.append,
                          resume_from=run.checkpoints_dir / "checkpoint-4")

    assert status == "completed"
    assert not [e for e in events if e["event"] in ("step", "started")], "not one step past the end"
    assert events[-1]["event"] == "finished" and events[-1]["step"] == 4 and events[-1]["adapter_step"] == 4
    assert (run.adapter_dir / "adapter_model.safetensors").read_bytes() == \
        (run.checkpoints_dir / "checkpoint-4" / "adapter_model.safetensors").read_bytes()
    assert _tree(run.checkpoints_dir) == checkpoints


def test_a_full_disk_while_saving_a_checkpoint_names_the_intact_one(demo_assets, tmp_path, monkeypatch):
    import fault_injection  # registers its hooks: this test trains in its own process
    from studio.core.train.failures import DiskFullError, failure_event
    from studio.core.train.run import run_training

    monkeypatch.setenv(fault_injection.ENV_VAR, "disk_full_at_checkpoint=4")
    config = load_config(demo_assets.config_path)
    config.training.max_steps, config.training.save_steps = 4, 2
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(DiskFullError) as raised:
        run_training(config, run, lambda event: None)

    event = failure_event(raised.value, config, folder=run.path)
    assert event["kind"] == "disk"
    assert event["message"].startswith(f"no space left on {run.path} while saving checkpoint-4; checkpoint-2 is "
                                       "intact; free ")
    assert re.search(r"; free \d+\.\d (KB|MB) and Resume$", event["message"]), event["message"]
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2"]
    assert not (run.checkpoints_dir / ".staging").exists(), "the torn save's bytes are given back at once"
