"""Issue 25's measurement: the tool-call score on held-out call-centre dialogues with new numbers and reworded
requests, trained on 40 originals without growth, with value variation, and (given paraphrases) with paraphrase.

    PYTHONPATH=$PWD python benchmarks/grow_toolcalls.py [--model FOLDER] [--config RUN.toml] [--steps N]
        [--variants K] [--seeds 0 1 2] [--equal-epochs] [--paraphrase-server URL | --paraphrase-folder FOLDER]
        [--output results.json]

Each condition runs the studio's own commands: `finetune-studio data grow RECIPE.toml`, `train`, then
`eval RUN --data held-out.jsonl --metric tool_call`. Every condition trains the same number of steps (`--steps`,
batch and learning rate from the config), so the grown rows are not favoured by more updates; `--equal-epochs`
adds the originals trained for as many epochs as the grown file gets in those steps (fewer steps). The table gives,
over the 12 held-out calls: right function, right arguments, the whole call right, and "right function, wrong
arguments" — the miss value variation is meant to remove. Default model: the offline demo (built under the work
folder); `--model` takes a local folder with a chat template (benchmarks/real_model.py `gemma3_folder()` for
Gemma 3 270M).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _callcentre import write_callcentre  # noqa: E402

ORIGINALS = 40
HELD_OUT = 12


def studio(*args: object) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "studio", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"finetune-studio {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done


def paraphrases(work: Path, writer, seed: int) -> tuple[list[dict], dict]:
    """The paraphrase loop over the originals' user turns; what it kept (for the recipe) and what it asked."""
    from studio.core.chat.paraphrase import paraphrase
    from studio.core.data.split import content_hash

    rows = [json.loads(line) for line in (work / "calls.jsonl").read_text(encoding="utf-8").splitlines()]
    started = time.monotonic()
    outcome = paraphrase([(content_hash(r), r["messages"]) for r in rows], writer, per_turn=2, seed=seed)
    report = {"asked": outcome.asked, "accepted": len(outcome.accepted), "rejected": dict(outcome.rejected),
              "seconds": round(time.monotonic() - started)}
    print(f"paraphrase: {report}", file=sys.stderr)
    return [{"original": p.original, "turn": p.turn, "text": p.text} for p in outcome.accepted], report


def scored(run: Path, held: Path) -> dict:
    """The tool-call metric's parts over the held-out calls, and the one miss growth targets, from the per-case
    results the eval wrote."""
    summary = json.loads(studio("eval", run, "--data", held, "--metric", "tool_call", "--max-new-tokens", 96,
                                "--json").stdout)
    (model,) = summary["models"].values()
    parts = model["metrics"]["tool_call"]["parts"]
    cases = [json.loads(line) for line in (run / "evals" / held.stem / "results.jsonl").open(encoding="utf-8")]
    calls = [c for case in cases for c in case["scores"]["tool_call"]["detail"]["calls"]]
    return {"right_function": parts["right_function"]["passed"], "arguments_right": parts["arguments_right"]["passed"],
            "call_right": sum(c["right_function"] and c["arguments_right"] for c in calls),
            "function_right_arguments_wrong": sum(c["right_function"] and not c["arguments_right"] for c in calls),
            "total": parts["right_function"]["total"],
            "misses": [c["got"] for c in calls if c["right_function"] and not c["arguments_right"]]}


def condition(work: Path, name: str, *, variants: int, config: Path, held: Path, steps: int, seed: int,
              kept: list[dict] | None = None) -> dict:
    import tomli_w

    from studio.core.config.settings import load_config, save_config

    recipe = {"source": "calls.jsonl", "seed": seed, "variants": variants, "held_out_fraction": 0.0}
    if kept:
        recipe["paraphrases"] = kept
    label = f"{name}-seed{seed}"
    grown = work / f"{label}.grown.jsonl"
    if not (work / label / "adapter").is_dir():
        (work / f"{label}.grow.toml").write_text(tomli_w.dumps(recipe), encoding="utf-8")
        studio("data", "grow", work / f"{label}.grow.toml")
    rows = sum(1 for _ in grown.open(encoding="utf-8"))
    run_config = load_config(config)
    run_config.data.train_file = str(grown)
    run_config.data.eval_file, run_config.data.eval_fraction, run_config.data.eval_auto = "", 0.0, False
    run_config.training.max_steps = steps
    run_config.training.seed = seed
    run_config.training.save_steps = max(steps, 1)
    if (work / label / "adapter").is_dir():  # a finished run of an earlier, interrupted benchmark: scored again
        times = [json.loads(line)["time"] for line in (work / label / "events.jsonl").open(encoding="utf-8")]
        trained_s = times[-1] - times[0]
    else:
        save_config(run_config, work / f"{label}.toml")
        started = time.monotonic()
        studio("train", work / f"{label}.toml", "--output", work / label)
        trained_s = time.monotonic() - started
    batch = run_config.training.per_device_train_batch_size * run_config.training.gradient_accumulation_steps
    result = {"condition": name, "seed": seed, "rows": rows, "steps": steps,
              "epochs": round(steps * batch / rows, 2), "train_s": round(trained_s)}
    result.update(scored(work / label, held))
    print(json.dumps(result, ensure_ascii=False), file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the offline demo model)")
    parser.add_argument("--config", type=Path, help="a run config to take the training settings from (default: the "
                                                    "demo's); --model still names the model")
    parser.add_argument("--steps", type=int, default=60, help="training steps of every condition")
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of each condition per seed "
                                                                          "(training and growing)")
    parser.add_argument("--equal-epochs", action="store_true",
                        help="also train the originals for as many epochs as the grown file gets")
    writers = parser.add_mutually_exclusive_group()
    writers.add_argument("--paraphrase-server", help="an OpenAI-compatible server on this machine")
    writers.add_argument("--paraphrase-folder", help="a local model folder to paraphrase with")
    writers.add_argument("--paraphrase-by-hand", action="store_true",
                         help="paraphrases written by hand (benchmarks/_callcentre.py), a stand-in for a competent "
                              "local model, through the studio's loop and filters")
    writers.add_argument("--paraphrases", type=Path, help="the paraphrases kept by an earlier run (its --output "
                                                          "file): no model needed, as a recipe re-run")
    parser.add_argument("--work", type=Path, help="the work folder; a condition already trained there is only "
                                                  "scored again (its eval resumes)")
    parser.add_argument("--output", type=Path, help="write every result as JSON here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="grow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    studio("demo", "--output", work / "demo")
    config = args.config or work / "demo" / "demo.toml"
    if args.model:
        from studio.core.config.settings import load_config, save_config

        c = load_config(config)
        c.model.name_or_path = args.model
        save_config(c, work / "model.toml")
        config = work / "model.toml"
    write_callcentre(work / "calls.jsonl", ORIGINALS, seed=0)
    held = write_callcentre(work / "held.jsonl", HELD_OUT, seed=0, held_out=True)
    writer = None
    if args.paraphrase_server:
        from studio.core.chat.paraphrase import ServerWriter

        writer = ServerWriter(args.paraphrase_server)
    elif args.paraphrase_by_hand:
        from _callcentre import HandParaphraser

        writer = HandParaphraser()
    elif args.paraphrase_folder:
        from studio.core.chat.paraphrase import FolderWriter

        writer = FolderWriter(args.paraphrase_folder)
    results, paraphrase_reports = [], []
    for seed in args.seeds:
        results.append(condition(work, "variation", variants=args.variants, config=config, held=held,
                                 steps=args.steps, seed=seed))
        results.append(condition(work, "originals", variants=0, config=config, held=held, steps=args.steps,
                                 seed=seed))
        if args.equal_epochs:
            same_epochs = max(1, round(args.steps * ORIGINALS / results[-2]["rows"]))
            results.append(condition(work, "originals-same-epochs", variants=0, config=config, held=held,
                                     steps=same_epochs, seed=seed))
        if writer is not None or args.paraphrases:
            if writer is not None:
                kept, report = paraphrases(work, writer, seed)
            else:
                earlier = json.loads(args.paraphrases.read_text(encoding="utf-8"))["paraphrase"]
                report = next(r for r in earlier if r["seed"] == seed)
                kept = report["kept"]
            paraphrase_reports.append(report | {"seed": seed, "kept": kept})
            name = "variation+paraphrase" + ("-by-hand" if args.paraphrase_by_hand else "")
            if kept:
                results.append(condition(work, name, variants=args.variants, config=config, held=held,
                                         steps=args.steps, seed=seed, kept=kept))
            else:  # nothing kept: the same rows as value variation alone, nothing new to train
                print(f"{name}, seed {seed}: no paraphrase kept; the rows are value variation's", file=sys.stderr)
    if args.output:
        args.output.write_text(json.dumps({"results": results, "paraphrase": paraphrase_reports}, indent=1,
                                          ensure_ascii=False), encoding="utf-8")
    print("| training data | seed | rows | steps | epochs | right function | right arguments | whole call right "
          "| right function, wrong arguments | train |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        n = r["total"]
        print(f"| {r['condition']} | {r['seed']} | {r['rows']} | {r['steps']} | {r['epochs']} | {r['right_function']}/{n} "
              f"| {r['arguments_right']}/{n} | {r['call_right']}/{n} | {r['function_right_arguments_wrong']}/{n} "
              f"| {r['train_s']} s |")


if __name__ == "__main__":
    main()
