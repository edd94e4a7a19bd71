"""Issue 25's measurement: the tool-call score on held-out call-centre dialogues with new numbers and reworded
requests, trained on 40 originals without growth, with value variation, and (given a local server) with paraphrase.

    PYTHONPATH=$PWD python benchmarks/grow_toolcalls.py [--model FOLDER] [--config RUN.toml] [--steps N] [--variants K]
                                                       [--paraphrase-server http://127.0.0.1:8080]

Each condition runs the studio's own commands: `finetune-studio data grow RECIPE.toml`, `train`, then
`eval RUN --data held-out.jsonl --metric tool_call`; the table gives right function and right arguments of the
12 held-out calls. Default model: the offline demo (built under the work folder); `--model` takes a local folder
with a chat template (benchmarks/real_model.py `gemma3_folder()` for Gemma 3 270M).
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


def studio(*args: object) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "studio", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"finetune-studio {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done


def paraphrases(work: Path, server: str) -> list[dict]:
    from studio.core.chat.paraphrase import ServerWriter, paraphrase
    from studio.core.data.split import content_hash

    rows = [json.loads(line) for line in (work / "calls.jsonl").read_text(encoding="utf-8").splitlines()]
    outcome = paraphrase([(content_hash(r), r["messages"]) for r in rows], ServerWriter(server), per_turn=2)
    print(f"paraphrase: {len(outcome.accepted)} accepted of {outcome.asked} asked; rejected "
          f"{dict(outcome.rejected)}", file=sys.stderr)
    return [{"original": p.original, "turn": p.turn, "text": p.text} for p in outcome.accepted]


def condition(work: Path, name: str, *, variants: int, config: Path, held: Path, steps: int,
              kept: list[dict] | None = None) -> dict:
    import tomli_w

    from studio.core.config.settings import load_config, save_config

    recipe = {"source": "calls.jsonl", "seed": 0, "variants": variants, "held_out_fraction": 0.0}
    if kept:
        recipe["paraphrases"] = kept
    (work / f"{name}.grow.toml").write_text(tomli_w.dumps(recipe), encoding="utf-8")
    studio("data", "grow", work / f"{name}.grow.toml")
    run_config = load_config(config)
    run_config.data.train_file = str(work / f"{name}.grown.jsonl")
    run_config.data.eval_file, run_config.data.eval_fraction, run_config.data.eval_auto = "", 0.0, False
    run_config.training.max_steps = steps
    save_config(run_config, work / f"{name}.toml")
    started = time.monotonic()
    studio("train", work / f"{name}.toml", "--output", work / name)
    trained_s = time.monotonic() - started
    summary = json.loads(studio("eval", work / name, "--data", held, "--metric", "tool_call", "--json").stdout)
    (model,) = summary["models"].values()
    parts = model["metrics"]["tool_call"]["parts"]
    rows = sum(1 for _ in (work / f"{name}.grown.jsonl").open(encoding="utf-8"))
    return {"condition": name, "rows": rows, "right_function": parts["right_function"]["passed"],
            "arguments_right": parts["arguments_right"]["passed"], "total": parts["right_function"]["total"],
            "train_s": round(trained_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the offline demo model)")
    parser.add_argument("--config", type=Path, help="a run config to take the training settings from (default: the "
                                                    "demo's); --model still names the model")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--paraphrase-server", help="an OpenAI-compatible server on this machine")
    parser.add_argument("--work", type=Path)
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
    write_callcentre(work / "calls.jsonl", 40, seed=0)
    held = write_callcentre(work / "held.jsonl", 12, seed=0, held_out=True)
    results = [condition(work, "originals", variants=0, config=config, held=held, steps=args.steps),
               condition(work, "variation", variants=args.variants, config=config, held=held, steps=args.steps)]
    if args.paraphrase_server:
        kept = paraphrases(work, args.paraphrase_server)
        results.append(condition(work, "variation+paraphrase", variants=args.variants, config=config, held=held,
                                 steps=args.steps, kept=kept))
    print("| training data | rows | right function | right arguments | train |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['condition']} | {r['rows']} | {r['right_function']}/{r['total']} | "
              f"{r['arguments_right']}/{r['total']} | {r['train_s']} s |")


if __name__ == "__main__":
    main()
