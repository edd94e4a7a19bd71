"""The training entry: data → tokens → (Q)LoRA model → TRL SFTTrainer → adapter, reported as events.

`run_training(config, run_dir, emit, stop_requested)` is a plain function (the Orange3 long-task
pattern): the CLI calls it in the training child process with `emit` writing events.jsonl, and tests
call it with a list's `append`. It never touches Qt.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from studio.core.config.settings import RunConfig, apply_auto_eval, save_config
from studio.core.data.loading import training_data
from studio.core.data.table import LoadedData
from studio.core.data.tokens import encode_example, trained_token_count
from studio.core.runs.events import Emit, make_event
from studio.core.runs.store import RunDirectory
from studio.core.train import hooks
from studio.core.train.failures import DiskFullError, folder_size, is_disk_full
from studio.core.train.prepare import (
    encode_splits,
    load_tokenizer,
    nothing_to_train_error,
)

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
    from studio.core.plan.vram import embedding_on_cpu_applies
    from studio.core.train.factories import device_map, quantization_config, torch_dtype

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(hardware.compute_dtype),
        "attn_implementation": attn_implementation,
        "trust_remote_code": config.model.trust_remote_code,
    }
    tied = _ties_embeddings(config) if config.training.embedding_on_cpu and hardware.device == "cuda" else False
    quant = quantization_config(config, hardware, embedding_on_cpu=embedding_on_cpu_applies(
        config, tied=tied, device=hardware.device))
    if quant is not None:
        kwargs["quantization_config"] = quant
        # Quantised weights must be placed at load time; under `accelerate launch` each process
        # takes the GPU of its own local rank.
        kwargs["device_map"] = device_map(config, hardware, tied_embeddings=tied,
                                          local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return kwargs


def _ties_embeddings(config: RunConfig) -> bool:
    """Whether the base's input embedding is its output head (the model's config, with its class's default)."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(config.model.name_or_path,
                                              trust_remote_code=config.model.trust_remote_code)
    text_config = getattr(model_config, "get_text_config", lambda: model_config)()
    return bool(getattr(text_config, "tie_word_embeddings", getattr(model_config, "tie_word_embeddings", False)))


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
                # A test seam: fault tests kill the process here (staged, not yet in place) or fill the disk.
                hooks.reached("checkpoint_staged", step=self.state.global_step, path=staging / name)
            except Exception as error:
                if not is_disk_full(error):
                    raise
                # The torn staging folder goes at once: its bytes are what the failure message and the log need.
                needed = folder_size(staging / name)
                shutil.rmtree(staging, ignore_errors=True)
                intact = _latest_checkpoint_in(final_root)
                if intact is not None:
                    needed = max(needed, folder_size(intact))
                raise DiskFullError(final_root.parent, saving=name, intact=intact, needed_bytes=needed) from error
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

        def _load_optimizer_and_scheduler(self, checkpoint):
            # The scheduler's lambdas are this run's (its total steps), but scheduler.pt and the optimizer's
            # param groups bring the learning rate the old schedule reached: resumed with a raised max_steps, a
            # run that had decayed to 0 trained its next step at 0. Continue this run's schedule instead.
            scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)  # accelerate wraps it
            base_lrs = list(getattr(scheduler, "base_lrs", []))
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                continue_schedule(scheduler, base_lrs)

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


def _latest_checkpoint_in(root: Path) -> Path | None:
    return RunDirectory(root.parent).latest_checkpoint() if root.name == "checkpoints" else None


def continue_schedule(scheduler: Any, base_lrs: list[float]) -> None:
    """Set a just-loaded LambdaLR scheduler, and its optimizer, to this run's schedule at the loaded step.

    `base_lrs` are this run's learning rates (the scheduler's before the checkpoint was loaded); the step count
    (`last_epoch`) is the checkpoint's. With the same settings this gives the very numbers the checkpoint held.
    """
    from torch.optim.lr_scheduler import LambdaLR

    if not isinstance(scheduler, LambdaLR) or len(base_lrs) != len(scheduler.lr_lambdas):
        return  # transformers builds every named schedule but reduce_lr_on_plateau as a LambdaLR
    scheduler.base_lrs = list(base_lrs)
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(base_lrs, scheduler.lr_lambdas)]
    for group, lr, base in zip(scheduler.optimizer.param_groups, lrs, base_lrs):
        group["lr"], group["initial_lr"] = lr, base
    scheduler._last_lr = lrs


def completed_resume(checkpoint: Path, config: RunConfig) -> tuple[int, int] | None:
    """(step, total) when resuming from `checkpoint` has nothing left to train under `config`; else None.

    The total is `training.max_steps` when set (the user may raise it to train further), else the step count the
    checkpoint's run computed from its epochs.
    """
    import json

    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        step, recorded_total = int(state.get("global_step") or 0), int(state.get("max_steps") or 0)
    except (OSError, ValueError, TypeError):
        return None  # the trainer's own reading says what is wrong with it
    total = config.training.max_steps if config.training.max_steps > 0 else recorded_total
    return (step, total) if total > 0 and step >= total else None


# What PEFT's save_pretrained writes for an adapter (README.md is its model-card stub).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


def save_adapter(model: Any, tokenizer: Any, target: Path, *, from_checkpoint: Path | None = None) -> None:
    """Write the PEFT adapter plus tokenizer and chat template, atomically: the model's current adapter, or
    the adapter a trainer checkpoint holds (the best evaluation's, when early stopping is on)."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if from_checkpoint is None:
        from studio.core.train.init_adapter import trained_adapter_names

        model.save_pretrained(str(staging), selected_adapters=trained_adapter_names(model))
    else:
        staging.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if (from_checkpoint / name).is_file():
                shutil.copy2(from_checkpoint / name, staging / name)
    tokenizer.save_pretrained(str(staging))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


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
    stop_requested: Callable[[], bool] = lambda: False,
    *,
    resume_from: Path | None = None,
) -> str:
    """Train one run to its end; returns "completed" or "stopped". Errors propagate to the caller.

    `config` is a checked one: the training child has validated it and run the preflight (train.preflight.check_run)
    before making the run folder, and the window before that in its own process; checked a third time here it was.
    """
    # Each preparation step before the first training step is a log event with a `phase` (data, libraries,
    # tokenizer, tokenising, model), so the window can say what the first minute of a run is spent on.
    emit(make_event("log", level="info", message=f"Reading {config.data.train_file}", phase="data"))
    # The same reader, column mapping and encoding as the Dataset tab; bad rows stop the run unless
    # data.skip_bad_rows is on (then each skipped row is logged).
    from studio.core.methods.trainers import method_training

    method = method_training(config)  # the method's trainer half; some read and tokenise records of their own
    from studio.core.train.init_adapter import load_trainable_adapter, resolve_init_adapter

    init = resolve_init_adapter(config)  # before any data or model loads: a mismatched base is refused at once
    if method.reads_own_records:
        train_data, eval_data = method.read(emit)
    else:
        train_data = training_data(config.data, emit=emit)
        eval_data = training_data(config.data, config.data.eval_file, emit=emit) if config.data.eval_file else None
        if resume_from is None and (held_out := apply_auto_eval(config, len(train_data.examples))):
            # A new run's automatic split becomes its recorded fraction: a resume and its held-out set read it back.
            emit(make_event("log", level="info", message=held_out))
            if int(os.environ.get("RANK", "0")) == 0:
                save_config(config, run_dir.config_path)

    emit(make_event("log", level="info", message="Importing PyTorch, transformers and TRL", phase="libraries"))
    import datasets
    import transformers
    from studio.core.plan.speedups import (
        apply_liger,
        detect_capabilities,
        plan_fast_path,
    )
    from studio.core.train.callback import StudioCallback
    from studio.core.train.scores import held_out_cases, scores_callback
    from studio.core.models.trained_base import keep_4bit_weights_unpacked, load_causal_lm
    from studio.core.train.factories import (
        cpu_thread_count,
        early_stopping_active,
        extra_callbacks,
        keep_adapter_in_compute_dtype,
        lora_config,
        resolve_hardware,
        trainer_config,
    )

    transformers.set_seed(config.training.seed)
    datasets.disable_progress_bars()
    hardware = resolve_hardware(config)
    if hardware.device == "cpu":
        import torch

        torch.set_num_threads(cpu_thread_count(config))
        emit(make_event("log", level="info", message=f"Computing with {torch.get_num_threads()} CPU thread(s)"))
    fast = plan_fast_path(config, detect_capabilities(hardware.device), compute_dtype=hardware.compute_dtype)
    emit(make_event("log", level="info", message=fast.summary()))
    emit(make_event("log", level="info", message="Loading tokenizer", phase="tokenizer"))
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)

    # encode_example over the Arrow-backed rows (a datasets map, never Python lists), then the eval split.
    if resume_from is not None and (done := completed_resume(Path(resume_from), config)) is not None:
        return _finish_from_checkpoint(run_dir, tokenizer, emit, Path(resume_from), *done)

    emit(make_event("log", level="info", message=f"Tokenising {len(train_data.examples)} rows", phase="tokenising"))
    if method.reads_own_records:  # TRL's preference and GRPO trainers tokenise with the chat template themselves
        train_set, eval_set = method.datasets(train_data, eval_data)
    else:
        train_set, eval_set = encode_splits(tokenizer, config, train_data, eval_data)

    emit(make_event("log", level="info",
                    message=f"Loading {config.model.name_or_path} ({config.quantization.mode}, "
                            f"{hardware.compute_dtype} on {hardware.device})", phase="model"))
    hooks.reached("model_load")  # a test seam: tests kill the process here
    # The one load of a base (pickle weights only with model.allow_pickle, the model's own code only when trusted).
    model = load_causal_lm(config.model.name_or_path, allow_pickle=config.model.allow_pickle,
                           setting="model.trust_remote_code", pickle_opt_in="model.allow_pickle = true",
                           **_model_load_kwargs(config, hardware, fast.attn_implementation))
    keep_4bit_weights_unpacked(model)  # evaluations in between must not leave the layers without gradients
    if fast.liger:
        not_applied = apply_liger(model)  # before SFTTrainer wraps the model with PEFT
        if not_applied:
            emit(make_event("log", level="warning", message=not_applied))
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if init is not None:
        if not _same_model(init.trained.base, config.model.name_or_path):
            emit(make_event("log", level="warning",
                            message=f"{init.adapter_dir} was trained on {init.trained.base}, and this run loads "
                                    f"{config.model.name_or_path}"))
        model = load_trainable_adapter(model, init, allow_pickle=config.model.allow_pickle,
                                       base=config.model.name_or_path)
        emit(make_event("log", level="info", message=init.describe(config.training.method)))

    callback = StudioCallback(emit, stop_requested, config_digest=config.digest(), num_train_rows=len(train_set),
                              resumed_from=str(resume_from) if resume_from else None,
                              device=hardware.device, compute_dtype=hardware.compute_dtype)
    # Scores while training need chat examples with an expected reply, which only SFT data has.
    scoring = None if not method.spec.scores_while_training else scores_callback(
        config, tokenizer, held_out_cases(config, train_data, eval_data), emit,
        has_eval=eval_set is not None, stop_requested=stop_requested)
    trainer_class = _atomic_checkpoint_trainer(method.trainer_class())
    trainer = trainer_class(
        model=model,
        args=trainer_config(config, hardware, run_dir.checkpoints_dir, has_eval=eval_set is not None,
                            padding_free=fast.padding_free),
        **method.trainer_kwargs(),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(config) if init is None else None,  # a continued adapter brings its own
        callbacks=[callback, *extra_callbacks(config, has_eval=eval_set is not None), *([scoring] if scoring else [])],
    )
    # Our callback reports every log as an event; the default printer would repeat each one as a dict.
    trainer.remove_callback(transformers.PrinterCallback)
    keep_adapter_in_compute_dtype(trainer.model, hardware.compute_dtype)  # before the optimizer is created
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
        _save_adapter_or_say_disk_full(trainer.model, tokenizer, run_dir, from_checkpoint)
        tensors = verify_adapter(run_dir.adapter_dir)
        final_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        emit(make_event("finished", status=status, step=state.global_step, final_loss=final_loss,
                        adapter=str(run_dir.adapter_dir), adapter_tensors=tensors,
                        adapter_step=best[1] if best is not None else state.global_step,
                        best_eval_loss=best[2] if best is not None else None, message=message))
    return status


def _save_adapter_or_say_disk_full(model: Any, tokenizer: Any, run_dir: RunDirectory,
                                   from_checkpoint: Path | None) -> None:
    try:
        save_adapter(model, tokenizer, run_dir.adapter_dir, from_checkpoint=from_checkpoint)
    except Exception as error:
        if not is_disk_full(error):
            raise
        shutil.rmtree(run_dir.adapter_dir.with_name(run_dir.adapter_dir.name + ".partial"), ignore_errors=True)
        intact = run_dir.latest_checkpoint()
        raise DiskFullError(run_dir.path, saving="the adapter", intact=intact,
                            needed_bytes=folder_size(intact) if intact else None) from error


def _finish_from_checkpoint(run_dir: RunDirectory, tokenizer: Any, emit: Emit, checkpoint: Path, step: int,
                            total: int) -> str:
    """A resume from the run's last step (a run stopped there, or one that failed writing its adapter): nothing is
    trained — transformers would train one step past the end — and the adapter is the checkpoint's."""
    if int(os.environ.get("RANK", "0")) != 0:
        return "completed"
    emit(make_event("log", level="info", message=f"{checkpoint.name} is step {step} of {total}, the run's last: "
                                                 "writing its adapter without training further"))
    _save_adapter_or_say_disk_full(None, tokenizer, run_dir, checkpoint)
    tensors = verify_adapter(run_dir.adapter_dir)
    import json

    history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("log_history", [])
    final_loss = next((h["loss"] for h in reversed(history) if "loss" in h), None)
    emit(make_event("finished", status="completed", step=step, final_loss=final_loss,
                    adapter=str(run_dir.adapter_dir), adapter_tensors=tensors, adapter_step=step,
                    best_eval_loss=None, message=f"The adapter is {checkpoint.name}'s."))
    return "completed"
