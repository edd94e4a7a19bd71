"""The training entry: data → tokens → (Q)LoRA model → TRL SFTTrainer → adapter, reported as events.

`run_training(config, run_dir, emit, should_stop)` is a plain function (the Orange3 long-task
pattern): the CLI calls it in the training child process with `emit` writing events.jsonl, and tests
call it with a list's `append`. It never touches Qt.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from studio.core import fault_injection
from studio.core.chat_tokens import encode_example, trained_token_count
from studio.core.config import RunConfig
from studio.core.data_prepare import encode_splits, load_tokenizer, nothing_to_train_error, training_data
from studio.core.dataset import LoadedData
from studio.core.events import Emit, make_event
from studio.core.run_store import RunDirectory

log = logging.getLogger(__name__)


def _hide_load_best_model_warning(record: logging.LogRecord) -> bool:
    # EarlyStoppingCallback warns that without load_best_model_at_end the best model is not loaded; the studio
    # writes the best evaluation's adapter itself (see best_checkpoint), so the warning would mislead.
    return not record.getMessage().startswith("Using EarlyStoppingCallback without load_best_model_at_end")


logging.getLogger("transformers.trainer_callback").addFilter(_hide_load_best_model_warning)


class AdapterCheckError(RuntimeError):
    """The adapter written at the end of training cannot be read back."""


def tokenize_dataset(tokenizer: Any, data: LoadedData, *, train_on_responses_only: bool) -> list[dict[str, Any]]:
    """Encode every example with the same function the Dataset tab's preview uses."""
    rows = [encode_example(tokenizer, ex, train_on_responses_only=train_on_responses_only) for ex in data.examples]
    if not any(trained_token_count(row["labels"]) for row in rows):
        raise nothing_to_train_error(data.path)
    return rows


def _model_load_kwargs(config: RunConfig, hardware: Any, attn_implementation: str) -> dict[str, Any]:
    from studio.core.library_configs import quantization_config, torch_dtype

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(hardware.compute_dtype),
        "attn_implementation": attn_implementation,
        "trust_remote_code": config.model.trust_remote_code,
    }
    quant = quantization_config(config, hardware)
    if quant is not None:
        kwargs["quantization_config"] = quant
        # Quantised weights must be placed at load time; under `accelerate launch` each process
        # takes the GPU of its own local rank.
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": f"cuda:{local_rank}" if hardware.device == "cuda" else "cpu"}
    return kwargs


def _atomic_checkpoint_trainer(base: type) -> type:
    """A trainer subclass whose checkpoints appear whole or not at all (staging folder + rename)."""

    class AtomicCheckpointTrainer(base):
        _staging_dir: str | None = None

        def _get_output_dir(self, trial):
            return self._staging_dir or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            from transformers.trainer import TRAINER_STATE_NAME
            from transformers.trainer_utils import rotate_checkpoints

            final_root = Path(super()._get_output_dir(trial))
            name = f"checkpoint-{self.state.global_step}"
            staging = final_root / ".staging"
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)  # a save torn by an earlier kill
            # Under `accelerate launch` every process writes into the staging folder (its own RNG state):
            # nobody writes before it is cleared, and it is renamed only once everybody has written.
            self.accelerator.wait_for_everyone()
            self._staging_dir = str(staging)
            try:
                super()._save_checkpoint(model, trial)
                # The trainer looked for the best checkpoint in the staging folder; point it at its real place
                # (resume reads it from trainer_state.json, rotation must never delete it).
                self.state.best_model_checkpoint = self._best_checkpoint_in(final_root)
                if self.args.should_save:
                    self.state.save_to_json(str(staging / name / TRAINER_STATE_NAME))
                # Tests kill the process here: the checkpoint is staged, not yet in place.
                fault_injection.pause_point("checkpoint_save", step=self.state.global_step)
            finally:
                self._staging_dir = None
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                target = final_root / name
                if target.exists():  # the same step saved twice (e.g. stop on a save step)
                    shutil.rmtree(target)
                os.replace(staging / name, target)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(output_dir=str(final_root), save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # PEFT's load_adapter upcasts the adapter to float32 (autocast_adapter_dtype), while TRL trains QLoRA
            # adapters in bfloat16: without this a resumed run would train other numbers, with twice the memory
            # for the adapter, its gradients and optimizer states. Runs before the optimizer is created.
            target = model if model is not None else self.model
            dtypes = {name: p.dtype for name, p in target.named_parameters() if p.requires_grad}
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            for name, param in target.named_parameters():
                if name in dtypes and param.dtype != dtypes[name]:
                    param.data = param.data.to(dtypes[name])

        def _best_checkpoint_in(self, final_root: Path) -> str | None:
            """Where the checkpoint of the best eval step lives (or will, once this save is renamed)."""
            best_step = self.state.best_global_step
            if not best_step:
                return None
            path = final_root / f"checkpoint-{best_step}"
            return str(path) if best_step == self.state.global_step or path.is_dir() else None

    return AtomicCheckpointTrainer


# What PEFT's save_pretrained writes for an adapter (README.md is its model-card stub).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


def save_adapter(model: Any, tokenizer: Any, target: Path, *, from_checkpoint: Path | None = None) -> None:
    """Write the PEFT adapter plus tokenizer and chat template, atomically: the model's current adapter, or
    the adapter a trainer checkpoint holds (the best evaluation's, when early stopping is on)."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if from_checkpoint is None:
        model.save_pretrained(str(staging))
    else:
        staging.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if (from_checkpoint / name).is_file():
                shutil.copy2(from_checkpoint / name, staging / name)
    tokenizer.save_pretrained(str(staging))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def best_checkpoint(state: Any) -> tuple[Path, int, float] | None:
    """(folder, step, eval loss) of the best evaluation's checkpoint, if the trainer tracked one that exists."""
    path = state.best_model_checkpoint
    if not path or not state.best_global_step or state.best_metric is None or not Path(path).is_dir():
        return None
    return Path(path), int(state.best_global_step), float(state.best_metric)


def early_stopping_message(state: Any, best: tuple[Path, int, float] | None, *, stopped_by_user: bool) -> str:
    """What the run's ending says about early stopping and which step's adapter it kept."""
    parts = []
    if not stopped_by_user and state.global_step < state.max_steps:
        parts.append(f"Eval loss stopped improving: stopped early at step {state.global_step} of {state.max_steps}.")
    if best is not None:
        parts.append(f"The adapter is from step {best[1]}, the lowest eval loss ({best[2]:.4f}).")
    return " ".join(parts)


def verify_adapter(adapter_dir: Path) -> int:
    """Read the adapter back (config and every tensor); returns the number of LoRA tensors."""
    import torch
    from peft import PeftConfig
    from safetensors import safe_open

    PeftConfig.from_pretrained(str(adapter_dir))
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise AdapterCheckError(f"{weights} was not written")
    count = 0
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if not torch.isfinite(f.get_tensor(key)).all():
                raise AdapterCheckError(f"{weights}: tensor {key} holds NaN or infinity")
            count += 1
    if count == 0:
        raise AdapterCheckError(f"{weights} holds no tensors")
    return count


def _set_aside_later_checkpoints(run_dir: RunDirectory, resume_from: Path, emit: Emit) -> None:
    if resume_from.resolve().parent != run_dir.checkpoints_dir.resolve():
        return  # a checkpoint of another folder: this run's own are not on its branch
    moved = run_dir.set_aside_checkpoints_after(int(resume_from.name.split("-")[1]))
    if moved:
        emit(make_event("log", level="warning",
                        message=f"Resuming from {resume_from.name}: the later checkpoint(s) "
                                f"{', '.join(p.name for p in moved)} belong to the steps retrained now and were "
                                f"moved to {run_dir.set_aside_dir}"))


def run_training(
    config: RunConfig,
    run_dir: RunDirectory,
    emit: Emit,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    resume_from: Path | None = None,
) -> str:
    """Train one run to its end; returns "completed" or "stopped". Errors propagate to the caller."""
    config.validate()
    config.check_sources()
    # Each preparation step before the first training step is a log event with a `phase` (data, libraries,
    # tokenizer, tokenising, model), so the window can say what the first minute of a run is spent on.
    emit(make_event("log", level="info", message=f"Reading {config.data.train_file}", phase="data"))
    # The same reader, column mapping and encoding as the Dataset tab; bad rows stop the run unless
    # data.skip_bad_rows is on (then each skipped row is logged).
    train_data = training_data(config.data, emit=emit)
    eval_data = training_data(config.data, config.data.eval_file, emit=emit) if config.data.eval_file else None

    emit(make_event("log", level="info", message="Importing PyTorch, transformers and TRL", phase="libraries"))
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from studio.core.callback import StudioCallback
    from studio.core.fast_path import apply_liger, detect_capabilities, plan_fast_path
    from studio.core.library_configs import (early_stopping_active, extra_callbacks, lora_config, resolve_hardware,
                                             sft_config)

    transformers.set_seed(config.training.seed)
    datasets.disable_progress_bars()
    hardware = resolve_hardware(config)
    fast = plan_fast_path(config, detect_capabilities(hardware.device), compute_dtype=hardware.compute_dtype)
    emit(make_event("log", level="info", message=fast.summary()))
    emit(make_event("log", level="info", message="Loading tokenizer", phase="tokenizer"))
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)

    # encode_example over the Arrow-backed rows (a datasets map, never Python lists), then the eval split.
    emit(make_event("log", level="info", message=f"Tokenising {len(train_data.examples)} rows", phase="tokenising"))
    train_set, eval_set = encode_splits(tokenizer, config, train_data, eval_data)

    emit(make_event("log", level="info",
                    message=f"Loading {config.model.name_or_path} ({config.quantization.mode}, "
                            f"{hardware.compute_dtype} on {hardware.device})", phase="model"))
    fault_injection.pause_point("model_load")  # tests kill here
    model = AutoModelForCausalLM.from_pretrained(config.model.name_or_path,
                                                 **_model_load_kwargs(config, hardware, fast.attn_implementation))
    if fast.liger:
        not_applied = apply_liger(model)  # before SFTTrainer wraps the model with PEFT
        if not_applied:
            emit(make_event("log", level="warning", message=not_applied))
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id

    callback = StudioCallback(emit, should_stop, config_digest=config.digest(), num_train_rows=len(train_set),
                              resumed_from=str(resume_from) if resume_from else None)
    trainer_class = _atomic_checkpoint_trainer(SFTTrainer)
    trainer = trainer_class(
        model=model,
        args=sft_config(config, hardware, run_dir.checkpoints_dir, has_eval=eval_set is not None,
                        padding_free=fast.padding_free),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[callback, *extra_callbacks(config, has_eval=eval_set is not None)],
    )
    # Our callback reports every log as an event; the default printer would repeat each one as a dict.
    trainer.remove_callback(transformers.PrinterCallback)
    if resume_from is not None and trainer.is_world_process_zero():
        _set_aside_later_checkpoints(run_dir, Path(resume_from), emit)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    status = "stopped" if callback.stopped else "completed"
    if trainer.is_world_process_zero():
        state = trainer.state
        best, message = None, ""
        if early_stopping_active(config, has_eval=eval_set is not None):
            best = best_checkpoint(state)
            message = early_stopping_message(state, best, stopped_by_user=callback.stopped)
        from_checkpoint = best[0] if best is not None and best[1] != state.global_step else None
        save_adapter(trainer.model, tokenizer, run_dir.adapter_dir, from_checkpoint=from_checkpoint)
        tensors = verify_adapter(run_dir.adapter_dir)
        final_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        emit(make_event("finished", status=status, step=state.global_step, final_loss=final_loss,
                        adapter=str(run_dir.adapter_dir), adapter_tensors=tensors,
                        adapter_step=best[1] if best is not None else state.global_step,
                        best_eval_loss=best[2] if best is not None else None, message=message))
    return status
