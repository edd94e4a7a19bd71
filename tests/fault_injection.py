"""Test-only fault injection for the training process, switched on by one environment variable.

The fault tests of the window must kill a run at exact moments (while the model loads, while a
checkpoint is being saved) and make it run out of memory on a machine without a GPU. Real timing
is too quick and too variable for that, so the training process pauses or fails on request:

    FINETUNE_STUDIO_TEST_FAULTS="pause_model_load=30,pause_checkpoint_save=30,oom_at_step=3,stop_at_step=4"

- `pause_<point>=SECONDS`: sleep at a named point (`model_load`, `checkpoint_save`), after printing
  `fault injection: pausing at <point>` to stderr (it lands in train.log, which a test can watch);
  with `pause_<point>_from_step=N`, only from step N on (e.g. let the first checkpoint be saved).
- `oom_at_step=N`: raise a simulated `torch.OutOfMemoryError` as step N begins.
- `disk_full_at_checkpoint=N`: raise `OSError(ENOSPC)` while checkpoint-N (or any later one) is being saved,
  after part of it is staged — a full disk without filling one.
- `safetensors_full_at_checkpoint=N`: from checkpoint-N on, every safetensors file staged for a checkpoint is
  written by the real safetensors writer into the folder `FINETUNE_STUDIO_TEST_FULL_DISK` names, which the test
  makes a tiny tmpfs (inside `unshare -m`): the library's own `SafetensorError … (os error 28)` of a full disk.
- `stop_at_step=N`: behave as if Stop was pressed at the end of step N (on the main process only,
  which is how a multi-process run must still stop all its processes together).

How it gets in: importing this module registers its functions at the hook points of
`studio.core.train.hooks`. The test session (tests/conftest.py) names this file in
`FINETUNE_STUDIO_TEST_HOOKS`, so every training child a test starts imports it; a test that trains in its
own process imports it itself. The faults are read at each point, so unset, every hook returns at once.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

from studio.core.train import hooks

ENV_VAR = "FINETUNE_STUDIO_TEST_FAULTS"
FULL_DISK_VAR = "FINETUNE_STUDIO_TEST_FULL_DISK"


def _faults() -> dict[str, float]:
    text = os.environ.get(ENV_VAR, "")
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            faults[name.strip()] = float(value) if value else 1.0
        except ValueError:
            print(f"fault injection: ignoring {item!r} in {ENV_VAR}", file=sys.stderr, flush=True)
    return faults


def pause_point(name: str, step: int | None = None) -> None:
    """Sleep at this point if `pause_<name>` is set (and `step` has reached `pause_<name>_from_step`)."""
    faults = _faults()
    seconds = faults.get(f"pause_{name}")
    from_step = faults.get(f"pause_{name}_from_step")
    if from_step is not None and (step is None or step < from_step):
        return
    if seconds:
        print(f"fault injection: pausing at {name} for {seconds:g} s", file=sys.stderr, flush=True)
        time.sleep(seconds)


def raise_oom_at_step(step: int) -> None:
    """Raise a simulated CUDA out-of-memory error if `oom_at_step` is this step."""
    at = _faults().get("oom_at_step")
    if at is not None and step >= at:
        import torch

        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 8.00 GiB "
            f"(simulated by {ENV_VAR})")


def disk_full_point(name: str, step: int, path: Path) -> None:
    """Raise the OSError a full disk gives if `disk_full_at_<name>` has been reached (only `checkpoint` is used)."""
    at = _faults().get(f"disk_full_at_{name.removesuffix('_save')}")
    if at is not None and step >= at:
        raise OSError(errno.ENOSPC, f"No space left on device (simulated by {ENV_VAR})", str(path))


_step_now = [0]


def _note_step(step: int) -> None:
    _step_now[0] = step


def _writing_into_full_disk() -> None:
    """Wrap the safetensors writer (looked up in safetensors.torch's globals at each call, so PEFT's and
    transformers' saves go through it) to write a staged checkpoint's files onto the full disk when asked."""
    import safetensors.torch

    real = safetensors.torch.serialize_file

    def serialize_file(tensors, filename, *args, **kwargs):
        at = _faults().get("safetensors_full_at_checkpoint")
        if at is not None and _step_now[0] >= at and ".staging" in Path(filename).parts:
            full = Path(os.environ[FULL_DISK_VAR]) / Path(filename).name
            print(f"fault injection: writing {filename} as {full}, on a full disk", file=sys.stderr, flush=True)
            filename = str(full)
        return real(tensors, filename, *args, **kwargs)

    safetensors.torch.serialize_file = serialize_file


def stop_at_step(step: int) -> bool:
    """Whether `stop_at_step` asks to stop at this step."""
    at = _faults().get("stop_at_step")
    return at is not None and step >= at


def _at_model_load() -> None:
    pause_point("model_load")  # tests kill here


def _at_checkpoint_staged(step: int, path: Path) -> None:
    # Tests kill the process here: the checkpoint is staged, not yet in place.
    pause_point("checkpoint_save", step=step)
    disk_full_point("checkpoint_save", step=step, path=path)


hooks.register("model_load", _at_model_load)
hooks.register("checkpoint_staged", _at_checkpoint_staged)
hooks.register("step_begin", raise_oom_at_step)
hooks.register("step_begin", _note_step)
if "safetensors_full_at_checkpoint" in os.environ.get(ENV_VAR, ""):
    _writing_into_full_disk()
hooks.register("step_end", stop_at_step)
