"""The TrainerCallback that turns trainer logs into studio events and honours the Stop button."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from studio.core.runs.events import Emit, make_event
from studio.core.train import hooks

EVAL_PROGRESS_INTERVAL_S = 2.0
"""At most one `evaluating` event per this many seconds (plus the first and the last batch)."""


class StudioCallback(TrainerCallback):
    """Relays `started`, `step`, `evaluating`, `eval` and `checkpoint` events; stops (with a save) when asked to.

    Only the main process emits, so a multi-process run under `accelerate launch` writes each
    event once.
    """

    def __init__(self, emit: Emit, stop_requested: Callable[[], bool], *, config_digest: str,
                 num_train_rows: int, resumed_from: str | None = None, device: str | None = None,
                 compute_dtype: str | None = None):
        self.emit = emit
        # Where and in which dtype the base was loaded: a merge quantises the base again from weights in
        # this dtype, so it gets the NF4 codes the adapter trained against (trained_base).
        self.device = device
        self.compute_dtype = compute_dtype
        self.stop_requested = stop_requested
        self.config_digest = config_digest
        self.num_train_rows = num_train_rows
        self.resumed_from = resumed_from
        self.stopped = False
        self._last_tokens: tuple[float, float] | None = None  # (time, tokens seen) at the last log
        self._eval_batches = 0  # batches of the evaluation under way
        self._eval_reported = 0.0  # when its progress was last emitted

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            import os

            self.emit(make_event("started", pid=os.getpid(), total_steps=state.max_steps,
                                 config_digest=self.config_digest, num_train_rows=self.num_train_rows,
                                 resumed_from=self.resumed_from, start_step=state.global_step,
                                 device=self.device, compute_dtype=self.compute_dtype))

    def on_step_begin(self, args, state, control, **kwargs):
        hooks.reached("step_begin", step=state.global_step + 1)  # a test seam (a simulated OOM)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped:
            return
        wanted = state.is_world_process_zero and (self.stop_requested()
                                                  or hooks.reached("step_end", step=state.global_step))
        if args.world_size > 1:
            # Every process must stop after the same step, or the others wait forever in the next step's
            # collective: the main process decides and tells the rest (it also reads the stop file first).
            wanted = _main_process_decides(wanted, args.device)
        if wanted:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # the checkpoint a later Resume continues from

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        # An evaluation emits nothing else until it ends, which on a big eval set and a small GPU can be
        # minutes: progress shows the run is alive (the window, and the supervisor's stop deadline).
        if not state.is_world_process_zero:
            return
        self._eval_batches += 1
        now = time.monotonic()
        try:
            total = len(eval_dataloader) if eval_dataloader is not None else None
        except TypeError:  # an iterable dataset has no length
            total = None
        if self._eval_batches == 1 or now - self._eval_reported >= EVAL_PROGRESS_INTERVAL_S or self._eval_batches == total:
            self._eval_reported = now
            self.emit(make_event("evaluating", step=state.global_step, done=self._eval_batches, total=total))

    def on_evaluate(self, args, state, control, **kwargs):
        self._eval_batches = 0

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            self.emit(make_event("eval", step=state.global_step, eval_loss=logs["eval_loss"],
                                 **_trainer_metrics(logs, eval_prefix=True)))
        if "loss" in logs:
            self.emit(make_event(
                "step",
                step=state.global_step,
                epoch=round(state.epoch or 0.0, 4),
                loss=logs["loss"],
                learning_rate=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_second=self._tokens_per_second(logs),
                **_trainer_metrics(logs, eval_prefix=False),
            ))

    def _tokens_per_second(self, logs: dict[str, Any]) -> float | None:
        # TRL logs the cumulative number of tokens trained on as `num_tokens`.
        tokens = logs.get("num_tokens")
        if tokens is None:
            return None
        now = time.monotonic()
        previous, self._last_tokens = self._last_tokens, (now, float(tokens))
        if previous is None or now <= previous[0]:
            return None
        return round((float(tokens) - previous[1]) / (now - previous[0]), 1)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.emit(make_event("checkpoint", step=state.global_step, path=str(path)))


_STEP_KEYS = {"loss", "learning_rate", "grad_norm", "num_tokens", "epoch", "eval_loss"}


def _trainer_metrics(logs: dict[str, Any], *, eval_prefix: bool) -> dict[str, Any]:
    """`{"metrics": {...}}` with the trainer's own numbers beyond the step's fields (DPO's rewards/margins and
    logps/chosen, GRPO's rewards/<function>/mean, reward_std, completions/mean_length, kl, ...), as the trainer
    names them (an eval's without its eval_ prefix); {} when there are none."""
    metrics = {}
    for key, value in logs.items():
        if key in _STEP_KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if eval_prefix != key.startswith("eval_"):
            continue
        name = key[len("eval_"):] if eval_prefix else key
        if eval_prefix and name in ("runtime", "samples_per_second", "steps_per_second"):
            continue  # the evaluation's timing, not a metric of the model
        metrics[name] = value
    return {"metrics": metrics} if metrics else {}


def _main_process_decides(flag: bool, device: Any) -> bool:
    """Rank 0's `flag`, on every process of a distributed run."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    decision = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(decision, src=0)
    return bool(decision.item())


class SaveEachNewBestCallback(TrainerCallback):
    """With early stopping, saves a checkpoint at every evaluation that improves the eval loss.

    The run then ends with the adapter of its best evaluation (see training.best_checkpoint) even when
    `save_steps` and `eval_steps` do not line up — transformers' own way (`load_best_model_at_end`) demands
    that they do and would reload the whole model. Runs before the trainer updates `state.best_metric`, so
    it compares with the best before this evaluation, as EarlyStoppingCallback does.
    """

    def on_evaluate(self, args, state, control, metrics: dict[str, Any] | None = None, **kwargs):
        value = (metrics or {}).get("eval_loss")
        if value is not None and (state.best_metric is None or value < state.best_metric):
            control.should_save = True
