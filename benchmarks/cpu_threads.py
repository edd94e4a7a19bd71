"""CPU threads for a training run: torch's default (every core) against one core fewer, with other work running.

On a 2-core machine a run with 2 threads makes every parallel matrix product wait for the thread that
shares its core with the other work (the window, a chat, a second run); with 1 thread it keeps a core of
its own. Each case trains the demo for --steps steps as `finetune-studio train` does, with
`training.cpu_threads` set, once alone and once beside a busy process that keeps one core at work; the
cases run interleaved (A B A B …) and each figure is the median seconds per step over the run's steps
(the run's own step events: loading time excluded).

    python benchmarks/cpu_threads.py --repeats 3 --output benchmarks/results/cpu-threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUSY = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"


def _seconds_per_step(events_path: Path) -> float:
    times = [e["time"] for e in map(json.loads, events_path.read_text().splitlines()) if e["event"] == "step"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps)


def _train(config_path: Path, threads: int, out: Path, steps: int, *, busy: bool) -> float:
    from studio.core.config.settings import load_config, save_config

    config = load_config(config_path)
    config.training.cpu_threads = threads
    config.training.max_steps = steps
    config.training.save_steps = steps  # one checkpoint at the end: the steps measure training
    run_config = out.with_suffix(".toml")
    save_config(config, run_config)
    load = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        subprocess.run([sys.executable, "-m", "studio", "train", str(run_config), "--output", str(out)],
                       check=True, capture_output=True, env=env)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return _seconds_per_step(out / "events.jsonl")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from studio.core.system.demo import build_demo
    from studio.core.config.presets import write_demo_config

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cpu-threads-") as tmp:
        demo = build_demo(Path(tmp) / "demo")
        write_demo_config(demo)
        n = 0
        for _ in range(args.repeats):
            for busy in (False, True):
                for threads in (cores, max(1, cores - 1)):
                    n += 1
                    key = f"{threads} thread(s), {'beside a busy process' if busy else 'alone'}"
                    seconds = _train(demo.config_path, threads, Path(tmp) / f"run-{n}", args.steps, busy=busy)
                    results.setdefault(key, []).append(seconds)
    summary = {key: {"median_s_per_step": statistics.median(v), "runs": v} for key, v in results.items()}
    print(f"{cores} cores; median seconds per step of the demo run over {args.repeats} interleaved repeats")
    for key, value in summary.items():
        print(f"  {key}: {value['median_s_per_step']:.3f}")
    if cores > 1:
        for busy in ("alone", "beside a busy process"):
            all_cores = summary[f"{cores} thread(s), {busy}"]["median_s_per_step"]
            fewer = summary[f"{cores - 1} thread(s), {busy}"]["median_s_per_step"]
            print(f"  {busy}: {cores} threads take {all_cores / fewer:.2f}x the time per step of {cores - 1}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"cores": cores, "steps": args.steps, "cases": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
