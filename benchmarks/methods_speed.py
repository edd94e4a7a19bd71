"""Steps/s of every training method (sft, dpo, orpo, kto, grpo) on the CPU demo: the studio against the same TRL
trainer in a plain script (benchmarks/plain_trl_methods.py, no studio code), in one run.

Both train the offline demo model (4-bit NF4, LoRA r=16 on every linear layer) with the demo's settings on data
built from the demo's ten conversations (dpo/orpo: its answer chosen, another question's rejected; kto: both,
labelled; grpo: the questions with their answer as the expected reply, 2 generations of at most 16 tokens, a
"contains" reward), the same steps and the same CPU thread count, each as a fresh process (`finetune-studio train`
and `python benchmarks/plain_trl_methods.py`). steps/s counts the steps after a warm-up (train_speed.summarise).

    python benchmarks/methods_speed.py                      # 40 steps each (a few minutes on 2 cores)
    python benchmarks/methods_speed.py --steps 8 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import machine, run_once as _run_once  # noqa: E402

PLAIN_SCRIPT = REPO / "benchmarks" / "plain_trl_methods.py"
METHODS = ("sft", "dpo", "orpo", "kto", "grpo")
RESULTS = REPO / "benchmarks" / "results" / "methods-speed.json"


def _rows(dataset: Path, method: str) -> list[dict]:
    chats = [json.loads(line)["messages"] for line in dataset.read_text(encoding="utf-8").splitlines()]
    pairs = [(m[0]["content"], m[1]["content"], chats[(i + 3) % len(chats)][1]["content"]) for i, m in enumerate(chats)]
    if method in ("dpo", "orpo"):
        return [{"prompt": q, "chosen": a, "rejected": w} for q, a, w in pairs]
    if method == "kto":
        return [r for q, a, w in pairs for r in ({"prompt": q, "completion": a, "label": True},
                                                 {"prompt": q, "completion": w, "label": False})]
    return [{"prompt": q, "completion": a} for q, a, _ in pairs]


def prepare(workdir: Path, steps: int, methods=METHODS, threads: int = 1) -> dict[str, Path]:
    """One config per method (the demo's knobs), with its data file beside it."""
    sys.path.insert(0, str(REPO))
    from studio.core.config.presets import write_demo_config
    from studio.core.config.settings import load_config, save_config
    from studio.core.system.demo import build_demo

    assets = build_demo(workdir / "demo")
    write_demo_config(assets)
    configs = {}
    for method in methods:
        config = load_config(assets.config_path)
        config.training.method = method
        config.training.max_steps, config.training.save_steps = steps, 10 * steps  # timed steps, not saves
        config.training.cpu_threads = threads
        config.training.fast_path = False  # the plain script has none; on a CPU the fast path changes nothing
        if method != "sft":
            data = workdir / f"{method}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in _rows(assets.dataset_path, method)),
                            encoding="utf-8")
            config.data.train_file = str(data)
        if method == "grpo":
            config.grpo.num_generations, config.grpo.max_completion_length = 2, 16
            config.grpo.rewards = ["contains=1.0"]
        configs[method] = workdir / f"{method}.toml"
        save_config(config, configs[method])
    return configs


def measure(steps: int, workdir: Path, methods=METHODS, threads: int = 1) -> dict:
    configs = prepare(workdir, steps, methods, threads)
    runs = {}
    for method in methods:  # studio, then script, per method: a drift of the machine touches both alike
        studio = _run_once("studio", configs[method], workdir / f"studio-{method}")
        script = _run_once("script", configs[method], workdir / f"script-{method}", script=PLAIN_SCRIPT)
        runs[method] = {"studio": studio, "script": script,
                        "steps_per_s_ratio": studio["steps_per_s"] / script["steps_per_s"]}
    return {"steps": steps, "cpu_threads": threads, "methods": runs, "machine": machine()}


def markdown(result: dict) -> str:
    lines = ["| method | studio steps/s | plain TRL script steps/s | ratio studio / script | studio first step (s) "
             "| script first step (s) |", "|---|---|---|---|---|---|"]
    for method, run in result["methods"].items():
        s, p = run["studio"], run["script"]
        lines.append(f"| {method} | {s['steps_per_s']:.2f} | {p['steps_per_s']:.2f} | {run['steps_per_s_ratio']:.2f} "
                     f"| {s['first_step_s']:.1f} | {p['first_step_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every run (default 1)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--save", action="store_true", help=f"write the result to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="methods-speed-") as tmp:
        result = measure(args.steps, args.workdir or Path(tmp), tuple(args.methods.split(",")), args.threads)
    if args.save:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
