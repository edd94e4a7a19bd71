"""`finetune-studio train` against the hand-written TRL script, on the CPU, side by side in one run.

Both train the offline demo model (4-bit NF4, LoRA r=16 on every linear layer) on the demo dataset
with the same config — the studio reads it as its run config, the plain script
(benchmarks/plain_trl_sft.py) reads the same TOML for its hyperparameters — for the same number of
steps, each as a fresh process the way a user starts it. The studio runs twice: with its fast path
(the default) and with it off. Runs alternate (studio, studio plain, script, studio, ...) so that
drifts in the machine's speed touch all of them alike.

- **time to first step**: from just before the process is started to the end of optimiser step 1
  (the studio's `step` event; the script's TrainerCallback line) — imports, data, model load.
- **steps/s**: optimiser steps per second after a warm-up, from the same timestamps.

    python benchmarks/train_speed.py                        # 300 steps, 3 repeats (a few minutes)
    python benchmarks/train_speed.py --steps 20 --repeats 1 --json

Targets (docs/BENCHMARKS.md): steps/s ratio studio / script >= 1.0; time to first step within 2 s
of the script's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAIN_SCRIPT = REPO / "benchmarks" / "plain_trl_sft.py"
WARMUP_STEPS = 5
TARGET_STEPS_RATIO = 1.0
TARGET_FIRST_STEP_GAP_S = 2.0
VARIANTS = ("studio", "studio-plain", "script")


def prepare(workdir: Path, steps: int) -> dict[str, Path]:
    """The demo model and data, and one config per variant (identical but for the fast path)."""
    sys.path.insert(0, str(REPO))
    from studio.core.config.settings import load_config, save_config
    from studio.core.system.demo import build_demo
    from studio.core.config.presets import write_demo_config

    assets = build_demo(workdir / "demo")
    write_demo_config(assets)
    config = load_config(assets.config_path)
    config.training.max_steps = steps
    paths = {}
    for variant, fast in (("studio", True), ("studio-plain", False), ("script", False)):
        config.training.fast_path = fast
        paths[variant] = workdir / f"{variant}.toml"
        save_config(config, paths[variant])
    return paths


def _studio_step_times(run_dir: Path) -> list[tuple[int, float]]:
    events = (json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines())
    return [(e["step"], e["time"]) for e in events if e.get("event") == "step"]


def _script_step_times(stdout: str) -> list[tuple[int, float]]:
    rows = (json.loads(line) for line in stdout.splitlines() if line.startswith('{"step"'))
    return [(row["step"], row["time"]) for row in rows]


def run_once(variant: str, config: Path, output: Path, timeout: float = 1800, *, script: Path = PLAIN_SCRIPT) -> dict:
    """One fresh process: `finetune-studio train` ("studio") or the plain `script`; its summarised step times."""
    if variant == "script":
        command = [sys.executable, str(script), str(config), "--output", str(output)]
    else:
        command = [sys.executable, "-m", "studio", "train", str(config), "--output", str(output)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    wall = time.time() - started
    if result.returncode != 0:
        raise RuntimeError(f"{variant} {config.stem} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    steps = _script_step_times(result.stdout) if variant == "script" else _studio_step_times(output)
    return summarise(steps, started, wall)


def summarise(steps: list[tuple[int, float]], started: float, wall: float) -> dict:
    """First-step time and post-warm-up steps/s from (step, unix time) pairs."""
    if not steps:
        raise ValueError("no optimiser step was recorded")
    first_step, first_time = steps[0]
    measured = [(s, t) for s, t in steps if s > WARMUP_STEPS] or steps
    (s0, t0), (s1, t1) = measured[0], measured[-1]
    steps_per_s = (s1 - s0) / (t1 - t0) if t1 > t0 else None
    return {"first_step_s": first_time - started, "steps_per_s": steps_per_s, "steps": steps[-1][0],
            "wall_s": wall}


def measure(steps: int, repeats: int, workdir: Path, variants=VARIANTS) -> dict:
    configs = prepare(workdir, steps)
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(repeats):
        for variant in variants:
            samples[variant].append(run_once(variant, configs[variant], workdir / f"{variant}-{repeat}"))
    medians = {v: {key: statistics.median(s[key] for s in runs) for key in ("first_step_s", "steps_per_s", "wall_s")}
               for v, runs in samples.items()}
    result = {"steps": steps, "repeats": repeats, "warmup_steps": WARMUP_STEPS, "samples": samples,
              "medians": medians, "machine": machine()}
    if "studio" in medians and "script" in medians:
        result["steps_per_s_ratio"] = medians["studio"]["steps_per_s"] / medians["script"]["steps_per_s"]
        result["first_step_gap_s"] = medians["studio"]["first_step_s"] - medians["script"]["first_step_s"]
    return result


def machine() -> dict:
    import importlib.metadata as md

    versions = {name: md.version(name) for name in ("torch", "transformers", "trl", "peft", "bitsandbytes")}
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **versions}


def markdown(result: dict) -> str:
    med = result["medians"]
    lines = ["| | studio (fast path) | studio (fast path off) | plain TRL script |", "|---|---|---|---|"]

    def row(label, key, fmt):
        cells = [fmt.format(med[v][key]) if v in med and med[v][key] is not None else "—" for v in VARIANTS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("time to first step (s)", "first_step_s", "{:.2f}")
    row("steps/s after warm-up", "steps_per_s", "{:.1f}")
    row("wall time (s)", "wall_s", "{:.1f}")
    if "steps_per_s_ratio" in result:
        lines.append("")
        lines.append(f"steps/s ratio studio / script: **{result['steps_per_s_ratio']:.2f}** "
                     f"(target >= {TARGET_STEPS_RATIO}); time to first step, studio − script: "
                     f"**{result['first_step_gap_s']:+.2f} s** (target <= {TARGET_FIRST_STEP_GAP_S} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--workdir", type=Path, help="where to build the demo and the runs (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="train-speed-"))
    os.environ["FINETUNE_STUDIO_HOME"] = str(workdir / "home")
    result = measure(args.steps, args.repeats, workdir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(f"{m['cpu']}, {m['cores']} cores; torch {m['torch']}, transformers {m['transformers']}, "
              f"trl {m['trl']}, peft {m['peft']}, bitsandbytes {m['bitsandbytes']}; "
              f"{args.steps} steps, median of {args.repeats}\n")
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
