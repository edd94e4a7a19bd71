"""How fast a large JSONL opens and tokenises: the studio's reader against plain `datasets`.

    python benchmarks/dataset_load.py                    # 1,000,000 rows (~290 MB), a few minutes
    python benchmarks/dataset_load.py --rows 100000 --json

One run generates a synthetic chat JSONL (one to three user/assistant exchanges, a third with a
system prompt) and reports, each part in a fresh process:

- studio scan:      `dataset.load_data` — streaming validation with file:line errors, normalisation,
                    Arrow batches spilled to the cache — time to the first rows and to the end;
- studio tokenise:  `data_prepare.encode_dataset` — the trainer's path: chat template + response-only
                    labels via `encode_examples`, as a datasets map over the Arrow rows;
- baseline:         `datasets.load_dataset("json", ...)` then `map(apply_chat_template(tokenize=True))`
                    (no validation, no locations, no label masking: less work than the studio does);
- window:           the Dataset tab opening the same file offscreen, with a QTimer probe every 10 ms
                    measuring the longest event-loop stall, and the time until the first rows show.

Tokenisation uses the offline demo model's tokenizer (Llama-3 chat template). The machine the
figures come from is noted in docs/BENCHMARKS.md; on a shared machine, run it when it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _token_count(dataset) -> int:
    """Tokens in the input_ids column, counted by Arrow (Python lists would dominate the memory figure)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(dataset.data.column("input_ids"))).as_py())


def part_scan(path: Path) -> dict:
    from studio.core.data.loading import load_data
    from studio.core.system.tasks import Task

    start = time.perf_counter()
    first: list[float] = []
    data = load_data(path, task=Task(partial=lambda head: first.append(time.perf_counter() - start)))
    total = time.perf_counter() - start
    rows = len(data.examples)
    again = time.perf_counter()
    load_data(path)
    return {"first_rows_s": first[0], "scan_s": total, "rows": rows, "rows_per_s": rows / total,
            "mb_per_s": path.stat().st_size / 2**20 / total, "bad_rows": data.issue_count,
            "reopen_cached_s": time.perf_counter() - again, "peak_rss_mib": _rss_mib()}


def part_tokenise(path: Path, model: str, limit: int | None) -> dict:
    import datasets

    from studio.core.train.prepare import encode_dataset, load_tokenizer
    from studio.core.data.loading import load_data

    datasets.disable_progress_bars()
    data = load_data(path)
    if limit is not None and limit < len(data.examples):
        from studio.core.data.table import ExampleRows, LineNumbers

        table = data.examples.table.slice(0, limit)
        data.examples, data.lines = ExampleRows(table), LineNumbers(table)
    tokenizer = load_tokenizer(model)
    start = time.perf_counter()
    encoded = encode_dataset(tokenizer, data, train_on_responses_only=True)
    seconds = time.perf_counter() - start
    tokens = _token_count(encoded)
    return {"rows": len(encoded), "tokenise_s": seconds, "rows_per_s": len(encoded) / seconds,
            "tokens_per_s": tokens / seconds, "peak_rss_mib": _rss_mib()}


def part_baseline(path: Path, model: str, limit: int | None) -> dict:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    start = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    load_s = time.perf_counter() - start
    rows = len(dataset)
    tokenizer = AutoTokenizer.from_pretrained(model)
    subset = dataset.select(range(limit)) if limit is not None and limit < rows else dataset

    def tokenise(batch):
        return {"input_ids": tokenizer.apply_chat_template(batch["messages"], tokenize=True)["input_ids"]}

    start = time.perf_counter()
    encoded = subset.map(tokenise, batched=True, remove_columns=subset.column_names)
    seconds = time.perf_counter() - start
    tokens = _token_count(encoded)
    return {"first_rows_s": load_s, "scan_s": load_s, "rows": rows, "rows_per_s": rows / load_s,
            "tokenised_rows": len(encoded), "tokenise_s": seconds, "tokenise_rows_per_s": len(encoded) / seconds,
            "tokens_per_s": tokens / seconds, "peak_rss_mib": _rss_mib()}


def part_window(path: Path) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from studio.ui.tabs.dataset_tab import QtDatasetTab

    tab = QtDatasetTab()
    tab.resize(1180, 740)
    tab.show()
    app.processEvents()
    clock = QElapsedTimer()
    clock.start()
    gaps: list[int] = []
    last = [clock.elapsed()]
    first: list[int] = []

    def probe() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now
        if not first and tab.rows_model.rowCount():
            first.append(now)

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(probe)
    timer.start()
    loop = QEventLoop()
    tab.loaded.connect(lambda _data: loop.quit())
    tab.load_failed.connect(lambda _message: loop.quit())
    start = clock.elapsed()
    tab.open_path(path)
    loop.exec()
    total = clock.elapsed() - start
    timer.stop()
    tab.shutdown()
    ordered = sorted(gaps)
    return {"first_rows_s": (first[0] - start) / 1000, "loaded_s": total / 1000, "rows": tab.rows_model.rowCount(),
            "probe_interval_ms": 10, "ticks": len(gaps), "longest_stall_ms": ordered[-1] - 10,
            "p99_tick_ms": ordered[int(len(ordered) * 0.99)], "median_tick_ms": ordered[len(ordered) // 2],
            "peak_rss_mib": _rss_mib()}


def _run_part(name: str, args: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--part", name, *args], capture_output=True, text=True,
                            env=env)
    if result.returncode != 0:
        raise SystemExit(f"part {name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokenise-rows", type=int, default=None,
                        help="tokenise only the first N rows (default: all), for both the studio and the baseline")
    parser.add_argument("--file", type=Path, help="use this JSONL instead of generating one")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--parts", default="scan,tokenise,baseline,window",
                        help="which parts to run (comma-separated; default: all)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # one measured part, in its own process
        limit = args.tokenise_rows
        result = {"scan": lambda: part_scan(args.path),
                  "tokenise": lambda: part_tokenise(args.path, args.model, limit),
                  "baseline": lambda: part_baseline(args.path, args.model, limit),
                  "window": lambda: part_window(args.path)}[args.part]()
        print(json.dumps(result))
        return 0

    from _synthetic import write_chat_jsonl

    from studio.core.system.demo import build_demo

    work = Path(tempfile.mkdtemp(prefix="dataset-bench-"))
    say = (lambda *_: None) if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    if args.file:
        path = args.file
    else:
        say(f"writing {args.rows:,} rows…")
        path = write_chat_jsonl(work / "chat.jsonl", args.rows)
    model = str(build_demo(work / "demo").model_dir)
    report: dict = {"file": str(path), "file_mib": round(path.stat().st_size / 2**20, 1),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                    "load_average_at_start": round(os.getloadavg()[0], 2)}
    extra = ["--path", str(path), "--model", model]
    if args.tokenise_rows:
        extra += ["--tokenise-rows", str(args.tokenise_rows)]
    for name in args.parts.split(","):
        env = dict(os.environ, FINETUNE_STUDIO_HOME=str(work / f"home-{name}"),
                   HF_DATASETS_CACHE=str(work / f"hf-{name}"))
        say(f"measuring {name}…")
        report[name] = _run_part(name, extra, env)
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    if args.json or len(args.parts.split(",")) < 4:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_table(r: dict) -> None:
    s, t, b, w = r["scan"], r["tokenise"], r["baseline"], r["window"]
    print(f"{r['file_mib']} MiB, {s['rows']:,} rows — {r['machine']}, load {r['load_average_at_start']}"
          f"→{r['load_average_at_end']}")
    print(f"{'':34}{'studio':>14}{'datasets baseline':>20}")
    print(f"{'first rows (s)':34}{s['first_rows_s']:>14.2f}{b['first_rows_s']:>20.2f}")
    print(f"{'full scan (s)':34}{s['scan_s']:>14.1f}{b['scan_s']:>20.1f}")
    print(f"{'scan rows/s':34}{s['rows_per_s']:>14,.0f}{b['rows_per_s']:>20,.0f}")
    print(f"{'tokenise rows/s':34}{t['rows_per_s']:>14,.0f}{b['tokenise_rows_per_s']:>20,.0f}")
    print(f"{'tokenise tokens/s':34}{t['tokens_per_s']:>14,.0f}{b['tokens_per_s']:>20,.0f}")
    print(f"{'tokenised rows':34}{t['rows']:>14,}{b['tokenised_rows']:>20,}")
    print(f"{'peak RSS scan / tokenise (MiB)':34}{s['peak_rss_mib']:>7.0f}/{t['peak_rss_mib']:<6.0f}"
          f"{b['peak_rss_mib']:>20.0f}")
    print(f"{'reopen (cached scan, s)':34}{s['reopen_cached_s']:>14.2f}")
    print(f"window: first rows after {w['first_rows_s']:.2f} s, all {w['rows']:,} rows after {w['loaded_s']:.1f} s; "
          f"longest event-loop stall {w['longest_stall_ms']} ms, p99 tick {w['p99_tick_ms']} ms "
          f"(QTimer every {w['probe_interval_ms']} ms)")


if __name__ == "__main__":
    sys.exit(main())
