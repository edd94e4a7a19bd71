"""Eval throughput: batched, left-padded greedy generation (studio.core.eval) against one `generate` call per
case, on the same cases and the same loaded model, in one run.

Trains the offline demo run (or takes --run), loads it once (the 4-bit base as trained, its adapter) and
answers the demo's ten questions, repeated to --cases cases, for two columns: the tuned adapter (replies
end at the end-of-turn token, lengths differ) and the base (rambles to max_new_tokens). Each way is timed
after one warm-up batch; the replies of both ways are compared (identical = the batching changes nothing).

    python benchmarks/eval_throughput.py --output benchmarks/results/eval-throughput.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _train_demo(work: Path) -> Path:
    from studio.core.config.presets import write_demo_config
    from studio.core.config.settings import load_config, save_config
    from studio.core.runs.events import EventWriter
    from studio.core.runs.store import RunDirectory
    from studio.core.system.demo import build_demo
    from studio.core.train.run import run_training

    demo = build_demo(work / "demo")
    write_demo_config(demo)
    config = load_config(demo.config_path)
    run = RunDirectory(work / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    writer = EventWriter(run.events_path)
    try:
        run_training(config, run, writer.write)
    finally:
        writer.close()
    return run.path


def measure(run_dir: Path, *, cases: int, batch_sizes: list[int], max_new_tokens: int) -> dict:
    import torch

    from studio.core.chat.model import ChatModel
    from studio.core.config.settings import load_config
    from studio.core.eval.cases import load_eval_set
    from studio.core.eval.generate import choose_batch_size, generate_batch

    config = load_config(run_dir / "run.toml")
    demo_cases = load_eval_set(config.data.train_file).cases
    eval_cases = [demo_cases[i % len(demo_cases)] for i in range(cases)]
    chat = ChatModel.load(run_dir)
    adapter = chat.adapters[0]
    result: dict = {"cases": cases, "max_new_tokens": max_new_tokens, "device": str(chat.model.device),
                    "torch_threads": torch.get_num_threads(), "loaded_as": chat.loaded_as, "columns": {}}
    auto = choose_batch_size(chat, 64 + max_new_tokens)
    for column, which in (("tuned", adapter), ("base", None)):
        def run(batch_size: int) -> tuple[float, list[str]]:
            generate_batch(chat, which, eval_cases[:batch_size], max_new_tokens=max_new_tokens, with_loss=False)
            started = time.perf_counter()
            replies = []
            for start in range(0, len(eval_cases), batch_size):
                replies += [g.reply for g in generate_batch(chat, which, eval_cases[start:start + batch_size],
                                                            max_new_tokens=max_new_tokens, with_loss=False)]
            return time.perf_counter() - started, replies

        one_seconds, one_replies = run(1)
        entry = {"one_by_one": {"seconds": round(one_seconds, 3), "examples_per_s": round(cases / one_seconds, 2)},
                 "batched": {}}
        for batch_size in sorted(set(batch_sizes + [auto])):
            seconds, replies = run(batch_size)
            entry["batched"][str(batch_size)] = {
                "seconds": round(seconds, 3), "examples_per_s": round(cases / seconds, 2),
                "speedup": round(one_seconds / seconds, 2),
                "identical_replies": sum(a == b for a, b in zip(replies, one_replies)),
            }
        result["columns"][column] = entry
        print(f"{column}: one by one {entry['one_by_one']['examples_per_s']} examples/s; "
              + "; ".join(f"batch {b}: {v['examples_per_s']} examples/s (x{v['speedup']}, "
                          f"{v['identical_replies']}/{cases} identical)" for b, v in entry["batched"].items()),
              flush=True)
    result["auto_batch_size"] = auto
    chat.unload()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run directory (default: train the demo run)")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--batch-sizes", default="4,8,16", help="comma-separated batch sizes to time")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--output", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        run_dir = args.run or _train_demo(Path(tmp))
        result = measure(run_dir, cases=args.cases, batch_sizes=sizes, max_new_tokens=args.max_new_tokens)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
