"""Failures a user can act on: the OOM hint and the retry config with the suggestion applied."""

from __future__ import annotations

import pytest

from studio.core.config.settings import RunConfig
from studio.core.train.failures import failure_event, memory_savings, oom_hint, oom_retry_config


def _config(**training) -> RunConfig:
    config = RunConfig(name="big")
    config.model.name_or_path = "/models/m"
    config.data.train_file = "/data/d.jsonl"
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def test_retry_applies_the_first_suggestion_only_to_a_copy():
    config = _config(gradient_checkpointing=False, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    adjusted, saving = oom_retry_config(config)
    assert saving.description == "turn on gradient checkpointing"
    assert adjusted.training.gradient_checkpointing is True
    assert adjusted.training.per_device_train_batch_size == 4, "one change at a time"
    assert config.training.gradient_checkpointing is False, "the original is untouched"
    assert oom_hint(config).startswith("Out of memory: turn on gradient checkpointing; use batch size 1")


def test_retrying_again_applies_the_next_suggestion_in_turn():
    config = _config(gradient_checkpointing=False, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                     max_length=2048)
    config.quantization.mode = "none"
    config.lora.r, config.lora.lora_alpha = 64, 128
    applied = []
    for _ in range(10):
        retry = oom_retry_config(config)
        if retry is None:
            break
        config, saving = retry
        applied.append(saving.description)
    assert applied == [
        "turn on gradient checkpointing",
        "use batch size 1 with gradient accumulation 8 (same effective batch)",
        "halve max length to 1024", "halve max length to 512", "halve max length to 256",
        "load the base model in 4-bit",
        "lower the LoRA rank to 32", "lower the LoRA rank to 16",
    ]
    t = config.training
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.max_length) == (1, 8, 256)
    assert config.quantization.mode == "4bit"
    assert (config.lora.r, config.lora.lora_alpha) == (16, 32), "alpha / r is kept"
    assert memory_savings(config) == [] and "smaller base model" in oom_hint(config)


def test_an_oom_failure_event_carries_settings_hint_and_the_retry_suggestion():
    import torch

    config = _config(gradient_checkpointing=False, max_length=1024)
    event = failure_event(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), config)
    assert event["kind"] == "oom"
    assert event["settings"]["max_length"] == 1024 and event["settings"]["gradient_checkpointing"] is False
    assert "gradient checkpointing" in event["hint"]
    assert event["suggestion"] == "turn on gradient checkpointing"
    assert event["suggestion_changes"] == {"training.gradient_checkpointing": True}


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("CUDA error: out of memory")])
def test_other_out_of_memory_errors_are_oom(error):
    assert failure_event(error, _config())["kind"] == "oom"


def test_a_data_failure_hint_fits_the_failure():
    from studio.core.data.issues import DataIssue
    from studio.core.data.issues import DataError

    rows = failure_event(DataError("data.jsonl: 1 bad row(s)", [DataIssue("data.jsonl", 4, "malformed JSON")]), None)
    assert rows["kind"] == "data" and rows["hint"].startswith("Fix or remove the rows listed")
    whole = failure_event(DataError("data.jsonl: no examples"), None)
    assert whole["kind"] == "data" and "rows listed" not in whole["hint"] and "Dataset tab" in whole["hint"]


def test_failure_messages_reach_the_events_file_without_terminal_colour_codes():
    # transformers colours some errors for a terminal; in events.jsonl and the window they were escape codes.
    from studio.core.data.issues import DataError

    coloured = OSError("\x1b[1m\x1b[31mError:\x1b[0m no file named \x1b]8;;file:///m\x07model.safetensors\x1b]8;;\x07 "
                       "in \x1b[4m/models/m\x1b[24m")
    event = failure_event(coloured, _config())
    assert event["kind"] == "crash"
    assert event["message"] == "OSError: Error: no file named model.safetensors in /models/m"
    data = failure_event(DataError("\x1b[33mbad rows\x1b[0m", ["\x1b[31md.jsonl:3: bad\x1b[0m"]), None)
    assert "\x1b" not in data["message"] and data["issues"] == ["d.jsonl:3: bad"]


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 1000"),
    RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
])
def test_a_full_disk_is_its_own_failure_kind_naming_the_run_folder_and_its_intact_checkpoint(tmp_path, error):
    (tmp_path / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    if "file write failed" in str(error):  # torch's message alone does not say why: the chained OSError does
        error.__cause__ = OSError(28, "No space left on device")

    event = failure_event(error, _config(), folder=tmp_path)

    assert event["kind"] == "disk"
    assert event["message"] == f"no space left on {tmp_path}; checkpoint-20 is intact; free some space and Resume"


def test_a_full_disk_while_saving_a_checkpoint_says_which_and_how_much_to_free(tmp_path):
    from studio.core.train.failures import DiskFullError

    error = DiskFullError(tmp_path, saving="checkpoint-40", intact=tmp_path / "checkpoints" / "checkpoint-20",
                          needed_bytes=52_400_000)
    event = failure_event(error, _config())

    assert event["kind"] == "disk"
    assert event["message"] == (f"no space left on {tmp_path} while saving checkpoint-40; checkpoint-20 is intact; "
                                "free 52.4 MB and Resume")
    assert "Resume" in event["hint"]


def test_a_runtime_error_that_is_not_a_full_disk_stays_a_crash():
    assert failure_event(RuntimeError("expected scalar type Float"), _config())["kind"] == "crash"
