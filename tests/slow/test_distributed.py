"""Outgrowing one GPU: the same `finetune-studio train` under `accelerate launch` with two processes.

On a machine without CUDA, `accelerate launch --multi_gpu --num_processes 2` starts two CPU processes
through torchrun and the trainer joins them with the gloo backend: real DDP (each process sees half of
each batch, gradients are all-reduced), which is what this test checks on CI. The run directory must
look exactly like a one-process run: each event written once (by rank 0), one checkpoint folder and
one adapter.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from fault_injection import ENV_VAR as FAULTS
from studio.core.runs.store import RunDirectory
from studio.core.train.run import verify_adapter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate_launch(*args, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "studio", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_train_one_adapter_write_each_event_once_stop_together_and_resume(demo_assets, tmp_path):
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_gloo_available():
        pytest.skip("torch was built without the gloo backend")
    run = RunDirectory(tmp_path / "run")
    # Stop is decided on rank 0 only (as when the stop file appears between two processes' checks):
    # both processes must still end after the same step, save together, and exit.
    env = {**os.environ, FAULTS: "stop_at_step=4", "OMP_NUM_THREADS": "1"}

    result = _accelerate_launch("train", demo_assets.config_path, "--output", run.path, "--max-steps", 12, env=env)

    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    events = run.events()
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and sum(1 for e in events if e.get("pid")) == 2, "rank 0 writes, once"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    # 10 rows, 2 per process per step, 2 processes: 3 steps per epoch — the data really was split.
    assert steps[0]["epoch"] == pytest.approx(1 / 3, abs=1e-3)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "stopped" and events[-1]["step"] == 4
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4"]
    # Each process's RNG state made it into the checkpoint before it was moved into place, and nothing was
    # left behind in the staging folder.
    checkpoint = run.latest_checkpoint()
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert not (run.checkpoints_dir / ".staging").exists()
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith("adapter")) == ["adapter"]
    assert verify_adapter(run.adapter_dir) > 0
    assert run.status() == "stopped"

    # Resume under the same launcher: both processes load the checkpoint (with their own RNG state).
    env.pop(FAULTS)
    result = _accelerate_launch("train", demo_assets.config_path, "--output", run.path, "--max-steps", 6, "--resume",
                                env=env)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    events = run.events()
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 2 and started[-1]["start_step"] == 4
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "completed" and events[-1]["step"] == 6
    assert run.status() == "completed"
