"""Fit the card, measured: the one GPU run of issue 15, in at most 8 minutes of wall time.

Under an emulated 8 GiB card (`torch.cuda.set_per_process_memory_fraction`, as benchmarks/gpu_speed.py
does it), for the Llama-3.1-8B and Llama-3.2-3B shapes (random weights, QLoRA NF4 r=16 all-linear,
batch 1), every probe in a fresh process (benchmarks/gpu_speed.py's child runner and measurements):

1. **longest context**: bisection on the length, 3 training steps per probe, no OOM = it trains —
   studio (the planner's choice, studio.core.plan.fit, at that length) against the plain TRL script
   (benchmarks/plain_trl_sft.py with its defaults: checkpointing, no offloading). The bisection starts
   at the estimate's longest length, so a few probes bracket it;
2. **tokens/s at 2048** under the cap, studio (planner) vs plain, and at a compute-bound batch of 4
   without the cap, with MFU;
3. **loss per step** of both paths on the same tokens, within `LOSS_TOLERANCE`;
4. **the estimate against the measured peak** with activation offloading off and on, and with each of the next
   memory levers (`LEVER_PROBES`): partial checkpointing (every 2nd layer), LoRA dropout 0, and the input
   embedding in CPU RAM (the 8B shape: the 3B one ties it to the output head). Their estimate terms are measured
   on the CPU (tests/core/plan/test_planner.py); their savings on a card are what these probes take.

The probes run in priority order and the script starts none it cannot finish before the deadline
(`--budget`, default 480 s), learning each shape's probe time from the probes run; what was not run is
listed as such. Figures are never filled in: a probe not run has none.

    python benchmarks/fit_gpu.py --dry-run --output plan.json   # the probes with their settings and estimates (CPU)
    python benchmarks/fit_gpu.py --output benchmarks/results/fit-gpu.json   # on a CUDA GPU

The GPU machine has torch, transformers and peft; TRL, bitsandbytes, accelerate and datasets come from
wheels carried in (`pip install --no-index --find-links <wheels> trl bitsandbytes accelerate datasets`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_speed  # noqa: E402  (puts the repository root on sys.path too)

from studio.core.config.settings import RunConfig  # noqa: E402
from studio.core.models.source import bundled_shapes  # noqa: E402
from studio.core.plan.fit import Card, DataLengths, plan_fit  # noqa: E402
from studio.core.plan.vram import GIB, ModelShape, embedding_can_stay_on_cpu, estimate_vram  # noqa: E402

MODELS = ("llama-3.1-8b", "llama-3.2-3b")
CAP_BYTES = 8 * GIB
SPEED_SEQ, SPEED_BATCH = 2048, 4
PROBE_STEPS = 3
SPEED_WARMUP, SPEED_STEPS = 2, 6
LOSS_TOLERANCE = 0.02
"""Largest relative difference of a step's loss between the paths on the same tokens (bf16 kernels differ)."""
BUDGET_SECONDS = 480
LENGTH_QUANTUM = 64
FIRST_GUESS_SECONDS = {"llama-3.1-8b": 75.0, "llama-3.2-3b": 40.0}
"""A probe's wall time (process start, model load, 3 steps) before one has been measured: a guess used only to
decide whether a probe can still start, replaced by the measured mean as probes finish."""
RESULT_PREFIX = "FIT_GPU_RESULT "
LEVER_PROBES = (
    ("llama-3.2-3b", "every 2nd layer checkpointed", {"checkpointing_every_n_layers": 2}, {}),
    ("llama-3.2-3b", "LoRA dropout 0", {}, {"lora_dropout": 0.0}),
    ("llama-3.1-8b", "input embedding in CPU RAM", {"embedding_on_cpu": True}, {}),
)
"""(model, lever, training settings, LoRA settings) of the peak probes at SPEED_SEQ that measure each memory lever
against the estimate, from the plain checkpointing setting (every layer, no offloading, the config's dropout)."""


def shape_of(model: str) -> ModelShape:
    return ModelShape.from_config(json.loads(bundled_shapes()[model].read_text(encoding="utf-8")), model)


def base_config(model: str, seq: int, batch: int) -> RunConfig:
    """The run both paths train (gpu_speed's case config: QLoRA defaults, r=16, all linear layers)."""
    case = gpu_speed.Case(model, "studio", seq, batch)
    return gpu_speed.case_config(case, "model", "data.jsonl", device="cuda", steps=PROBE_STEPS)


def studio_settings(model: str, seq: int, batch: int, cap: int) -> tuple[dict[str, Any], str]:
    """The planner's levers at this length on the capped card, or the leanest ones where it says nothing fits (the
    probe then measures whether the estimate was too cautious)."""
    config = base_config(model, seq, batch)
    plan = plan_fit(shape_of(model), config, Card(cap, "cuda", "8 GiB cap"), data=DataLengths((seq,)),
                    effective_batch=batch)
    t = plan.config.training if plan.fits else config.training
    chosen = {"gradient_checkpointing": t.gradient_checkpointing if plan.fits else True,
              "checkpointing_every_n_layers": t.checkpointing_every_n_layers if plan.fits else 1,
              "activation_offloading": t.activation_offloading if plan.fits else True,
              "embedding_on_cpu": t.embedding_on_cpu if plan.fits else embedding_can_stay_on_cpu(
                  config, tied=shape_of(model).tie_word_embeddings),
              "per_device_train_batch_size": t.per_device_train_batch_size if plan.fits else 1,
              "gradient_accumulation_steps": t.gradient_accumulation_steps if plan.fits else batch}
    return chosen, "planner" if plan.fits else "leanest (the planner finds nothing fits)"


def studio_lora(model: str, seq: int, batch: int, cap: int) -> dict[str, Any]:
    """The planner's LoRA dropout at this length (0 where it goes for length), or 0 where nothing fits."""
    config = base_config(model, seq, batch)
    plan = plan_fit(shape_of(model), config, Card(cap, "cuda", "8 GiB cap"), data=DataLengths((seq,)),
                    effective_batch=batch)
    return {"lora_dropout": plan.config.lora.lora_dropout if plan.fits else 0.0}


def apply_settings(config: RunConfig, probe: dict[str, Any]) -> RunConfig:
    """The probe's training and LoRA settings on a run config."""
    for name, value in probe["training"].items():
        setattr(config.training, name, value)
    for name, value in probe.get("lora", {}).items():
        setattr(config.lora, name, value)
    return config


def probe_config(probe: dict[str, Any]) -> RunConfig:
    return apply_settings(base_config(probe["model"], probe["seq"], probe["batch"]), probe)


def estimate_of(probe: dict[str, Any]) -> int:
    return estimate_vram(shape_of(probe["model"]), probe_config(probe)).total


def make_probe(kind: str, model: str, path: str, seq: int, *, batch: int = 1, cap: int = CAP_BYTES,
               offloading: bool | None = None, lever: tuple[str, dict, dict] | None = None) -> dict[str, Any]:
    lora: dict[str, Any] = {}
    if path == "studio":
        training, chosen_by = studio_settings(model, seq, batch, cap or 10**15)
        lora = studio_lora(model, seq, batch, cap or 10**15)
        if offloading is not None:
            training = {**training, "gradient_checkpointing": True, "checkpointing_every_n_layers": 1,
                        "activation_offloading": offloading, "embedding_on_cpu": False}
            chosen_by = f"offloading {'on' if offloading else 'off'}"
        if lever is not None:  # one lever from the plain checkpointing setting
            name, lever_training, lever_lora = lever
            training = {**training, "gradient_checkpointing": True, "checkpointing_every_n_layers": 1,
                        "activation_offloading": False, "embedding_on_cpu": False, **lever_training}
            lora = {"lora_dropout": base_config(model, seq, batch).lora.lora_dropout, **lever_lora}
            chosen_by = f"lever: {name}"
    else:
        # The plain script's defaults: TRL checkpoints, offloads nothing, one micro-batch of `batch`.
        training = {"gradient_checkpointing": True, "activation_offloading": False,
                    "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1}
        chosen_by = "TRL defaults"
    steps = PROBE_STEPS if kind != "speed" else SPEED_WARMUP + SPEED_STEPS
    probe = {"kind": kind, "model": model, "path": path, "seq": seq, "batch": batch, "cap_bytes": cap,
             "steps": steps, "training": training, "lora": lora, "chosen_by": chosen_by,
             "offloading": bool(training["activation_offloading"])}
    probe["estimate_bytes"] = estimate_of(probe)
    return probe


def estimated_longest(model: str, path: str, cap: int) -> int:
    """The longest length whose probe the estimate says fits `cap` (the bisection's first guess)."""
    low, high = LENGTH_QUANTUM, 262_144
    while high - low > LENGTH_QUANTUM:
        middle = (low + high) // 2 // LENGTH_QUANTUM * LENGTH_QUANTUM
        fits = make_probe("longest-context", model, path, middle, cap=cap)["estimate_bytes"] <= cap
        low, high = (middle, high) if fits else (low, middle)
    return low


def planned_probes() -> list[dict[str, Any]]:
    """Every probe in priority order (the bisection's later probes depend on results, so only its first is listed;
    `bisection` says how many more it may take)."""
    probes = []
    for model in MODELS:
        for path in ("studio", "plain"):
            probe = make_probe("longest-context", model, path, estimated_longest(model, path, CAP_BYTES))
            probe["bisection"] = {"first_guess": probe["seq"], "more_probes": 3}
            probes.append(probe)
        if model == "llama-3.2-3b":
            probes += [make_probe("speed", model, path, SPEED_SEQ) for path in ("studio", "plain")]
            probes += [make_probe("peak", model, "studio", SPEED_SEQ, offloading=o) for o in (False, True)]
            probes += [make_probe("speed", model, path, SPEED_SEQ, batch=SPEED_BATCH, cap=0)
                       for path in ("studio", "plain")]
        # Without the cap: every lever's probe trains, whatever it needs, so its peak can be read.
        probes += [make_probe("peak", model, "studio", SPEED_SEQ, cap=0, lever=(name, training, lora))
                   for lever_model, name, training, lora in LEVER_PROBES if lever_model == model]
    # Longest-context probes first for the 8B shape (the headline target), then the 3B speed, then the rest (the
    # lever probes last: what does not fit the budget waits for the next GPU).
    order = {("longest-context", "llama-3.1-8b"): 0, ("speed", "llama-3.2-3b"): 1, ("peak", "llama-3.2-3b"): 2,
             ("longest-context", "llama-3.2-3b"): 3}
    return sorted(probes, key=lambda p: 5 if p["chosen_by"].startswith("lever") else
                  order.get((p["kind"], p["model"]), 4))


# ------------------------------------------------------------------------------ one probe, in a child


def run_probe_here(probe: dict[str, Any], model_dir: Path, data_file: Path) -> dict[str, Any]:
    """Train one probe with gpu_speed's measurements; its run config is the probe's (patched into gpu_speed)."""
    def config_for(case, model_dir_, data_file_, *, device, steps):
        return apply_settings(original(case, model_dir_, data_file_, device=device, steps=steps), probe)

    original = gpu_speed.case_config
    gpu_speed.case_config = config_for
    case = gpu_speed.Case(probe["model"], probe["path"], probe["seq"], probe["batch"], probe["cap_bytes"])
    warmup = SPEED_WARMUP if probe["kind"] == "speed" else 0
    return gpu_speed.run_case(case, model_dir, data_file, warmup, probe["steps"] - warmup, "cuda")


def run_probe(probe: dict[str, Any], work: Path, timeout: int) -> dict[str, Any]:
    import subprocess

    vocab = shape_of(probe["model"]).vocab_size
    model_dir = gpu_speed.prepare_shape(probe["model"], work / probe["model"], timeout)
    rows = probe["steps"] * probe["batch"] + 2
    data = gpu_speed.write_text_rows(work / f"rows-{probe['seq']}-{rows}.jsonl", rows, probe["seq"], vocab)
    command = [sys.executable, __file__, "--probe", json.dumps(probe), "--model-dir", str(model_dir),
               "--data-file", str(data)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    result = json.loads(lines[-1][len(RESULT_PREFIX):]) if lines else {"status": "failed",
                                                                      "error": done.stderr[-3000:]}
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


# ------------------------------------------------------------------------------ the whole run


class Clock:
    """The deadline, and each shape's mean probe time so far."""

    def __init__(self, budget: float):
        self.deadline = time.monotonic() + budget
        self.seconds: dict[str, list[float]] = {}

    def expected(self, model: str) -> float:
        taken = self.seconds.get(model)
        return sum(taken) / len(taken) if taken else FIRST_GUESS_SECONDS[model]

    def can_start(self, model: str) -> bool:
        return time.monotonic() + self.expected(model) <= self.deadline

    def took(self, model: str, seconds: float) -> None:
        self.seconds.setdefault(model, []).append(seconds)


def bisect(first: dict[str, Any], work: Path, clock: Clock, timeout: int, more: int) -> dict[str, Any]:
    """Bracket the longest length that trains: from the estimate's guess, ×1.25 up or ÷1.25 down until the
    bracket closes, then halve it; each probe a fresh process."""
    trained, failed, probes = 0, 0, []
    seq = first["seq"]
    for _ in range(1 + more):
        if not clock.can_start(first["model"]):
            break
        probe = make_probe("longest-context", first["model"], first["path"], seq)
        result = run_probe(probe, work, timeout)
        clock.took(first["model"], result.get("wall_seconds", 0))
        ok = result.get("status") == "ok"
        probes.append({**probe, "result": result})
        trained, failed = (max(trained, seq), failed) if ok else (trained, min(failed or seq, seq))
        if trained and failed:
            if failed - trained <= LENGTH_QUANTUM:
                break
            seq = (trained + failed) // 2 // LENGTH_QUANTUM * LENGTH_QUANTUM
        else:
            seq = int(seq * 1.25 if ok else seq / 1.25) // LENGTH_QUANTUM * LENGTH_QUANTUM
    return {"model": first["model"], "path": first["path"], "longest_trained": trained or None,
            "shortest_failed": failed or None, "probes": probes}


def run_all(budget: float, work: Path, timeout: int) -> dict[str, Any]:
    clock = Clock(budget)
    report: dict[str, Any] = {"dry_run": False, "bisections": [], "probes": [], "not_run": []}
    for probe in planned_probes():
        if probe["kind"] == "longest-context":
            report["bisections"].append(bisect(probe, work, clock, timeout, probe["bisection"]["more_probes"]))
            continue
        if not clock.can_start(probe["model"]):
            report["not_run"].append({**probe, "why": "the time budget"})
            continue
        result = run_probe(probe, work, timeout)
        clock.took(probe["model"], result.get("wall_seconds", 0))
        report["probes"].append({**probe, "result": result})
    report["losses"] = compare_losses(report["probes"])
    report["machine"] = gpu_speed.machine([p["result"] for p in report["probes"]], "cuda")
    return report


def compare_losses(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per speed case: both paths' step losses and the largest relative difference, against LOSS_TOLERANCE."""
    out = []
    speed = [p for p in probes if p["kind"] == "speed"]
    for studio in (p for p in speed if p["path"] == "studio"):
        plain = next((p for p in speed if p["path"] == "plain" and p["batch"] == studio["batch"]
                      and p["cap_bytes"] == studio["cap_bytes"]), None)
        if plain is None:
            continue
        a, b = studio["result"].get("losses") or [], plain["result"].get("losses") or []
        diffs = [abs(x - y) / abs(y) for x, y in zip(a, b) if y]
        out.append({"model": studio["model"], "batch": studio["batch"], "studio": a, "plain": b,
                    "max_relative_difference": max(diffs) if diffs else None,
                    "within_tolerance": bool(diffs) and max(diffs) <= LOSS_TOLERANCE,
                    "same_tokens": studio["result"].get("tokens_digest") == plain["result"].get("tokens_digest")})
    return out


def dry_run() -> dict[str, Any]:
    cases = planned_probes()
    guesses = [FIRST_GUESS_SECONDS[p["model"]] * (1 + p.get("bisection", {}).get("more_probes", 0)) for p in cases]
    return {"dry_run": True, "figures": "to be taken on a lent GPU", "budget_seconds": BUDGET_SECONDS,
            "planned_seconds": min(BUDGET_SECONDS, round(sum(guesses))), "unbounded_guess_seconds": round(sum(guesses)),
            "loss_tolerance": LOSS_TOLERANCE, "cases": cases}


def print_plan(report: dict[str, Any]) -> None:
    print("| probe | model | path | length | batch | cap | settings (chosen by) | estimate |")
    print("| --- | --- | --- | ---: | ---: | --- | --- | ---: |")
    for p in report["cases"]:
        t = p["training"]
        every_n = t.get("checkpointing_every_n_layers", 1)
        checkpointing = (f"every {every_n}" if every_n > 1 else "on") if t["gradient_checkpointing"] else "off"
        levers = (f"ckpt {checkpointing}, offload {'on' if t['activation_offloading'] else 'off'}"
                  f"{', embedding in RAM' if t.get('embedding_on_cpu') else ''}"
                  f", dropout {p.get('lora', {}).get('lora_dropout', '-')}, {t['per_device_train_batch_size']}×"
                  f"{t['gradient_accumulation_steps']}")
        cap = f"{p['cap_bytes'] / GIB:g} GiB" if p["cap_bytes"] else "none"
        print(f"| {p['kind']} | {p['model']} | {p['path']} | {p['seq']:,} | {p['batch']} | {cap} | {levers} "
              f"({p['chosen_by']}) | {p['estimate_bytes'] / GIB:.2f} GiB |")
    print(f"\nplanned: at most {report['planned_seconds']} s of probes (budget {report['budget_seconds']} s); "
          "figures to be taken on a lent GPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the probes with their settings and estimates")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds of probes at most")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per probe")
    parser.add_argument("--work-dir", type=Path, help="where the models and data are built")
    parser.add_argument("--output", type=Path, help="also write the report as JSON")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe:
        result = run_probe_here(json.loads(args.probe), args.model_dir, args.data_file)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    if args.dry_run:
        report = dry_run()
        print_plan(report)
    else:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU: --dry-run lists the probes on the CPU", file=sys.stderr)
            return 2
        work = args.work_dir or Path(tempfile.gettempdir()) / "studio-speed-models"
        work.mkdir(parents=True, exist_ok=True)
        report = run_all(args.budget, work, args.timeout)
        print(json.dumps({k: v for k, v in report.items() if k != "probes"}, indent=2)[:20000])
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
