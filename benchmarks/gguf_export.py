"""GGUF export speed, size and memory on a real model shape (random weights, no download).

    python benchmarks/gguf_export.py --shape llama-3.2-1b --output gguf-bench.json

Builds a random-weight model with the shape of a bundled config (resources/model_configs/), saved
in bf16 as the merge step saves it, with the offline demo's tokenizer (its ids fit any of these
vocabularies; the rest of the vocabulary is written as padding tokens). Then each GGUF type is
exported by `finetune-studio export gguf` in a child process, whose wall time and peak RSS are
measured. With llama-cpp-python installed, llama.cpp's logits on 64 tokens are compared with
transformers' (the model is evaluated in float32 on the CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_model(shape: str, folder: Path, layers: int | None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from studio.core.system.demo import build_demo

    config_dict = json.loads((ROOT / "resources" / "model_configs" / f"{shape}.json").read_text())
    if layers:
        config_dict["num_hidden_layers"] = layers
    config = AutoConfig.for_model(**{k: v for k, v in config_dict.items() if k != "model_type"},
                                  model_type=config_dict["model_type"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="2GB")
    demo = build_demo(folder.parent / "demo")
    AutoTokenizer.from_pretrained(str(demo.model_dir)).save_pretrained(folder)


# `finetune-studio export gguf ...` that reports its own peak RSS when it exits. Sampled, because
# ru_maxrss survives fork + exec on Linux and would report the parent's size at the fork.
_CHILD = """
import runpy, sys, threading, time
import psutil
peak, process = [0], psutil.Process()
def sample():
    while True:
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
sys.argv = ["finetune-studio", *sys.argv[1:]]
try:
    runpy.run_module("studio", run_name="__main__")
finally:
    print("peak_rss_kib", max(peak[0], process.memory_info().rss) // 1024, file=sys.stderr)
"""


def export(model: Path, output: Path, gguf_type: str) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, "export", "gguf", str(model), "--output", str(output),
                             "--type", gguf_type], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    peak_kib = int(result.stderr.rsplit("peak_rss_kib", 1)[1].split()[0])
    return {"type": gguf_type, "seconds": round(seconds, 1), "file_mib": round(output.stat().st_size / 2**20, 1),
            "peak_rss_mib": round(peak_kib / 1024)}


def llama_cpp_logit_error(model_dir: Path, gguf: Path) -> tuple[float, float] | None:
    """(max |llama.cpp - transformers| logit, max |logit|) on 64 tokens, or None without llama-cpp-python."""
    try:
        import llama_cpp
    except ImportError:
        return None
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    ids = list(range(10, 74))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=128, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-3.2-1b", help="a config in resources/model_configs/")
    parser.add_argument("--layers", type=int, help="keep only this many decoder layers (faster)")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0"])
    parser.add_argument("--workdir", type=Path, help="where to build the model (default: a temporary folder)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    model = workdir / "model"
    if not (model / "config.json").is_file():
        started = time.perf_counter()
        build_model(args.shape, model, args.layers)
        print(f"built {args.shape} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    weights_mib = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 2**20
    rows = []
    for gguf_type in args.types:
        output = workdir / "gguf" / f"{args.shape}-{gguf_type}.gguf"
        row = export(model, output, gguf_type)
        error = llama_cpp_logit_error(model, output)
        row["llama_cpp_max_abs_logit_error"], row["max_abs_logit"] = error if error else (None, None)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    report = {"shape": args.shape, "layers": args.layers, "bf16_weights_mib": round(weights_mib, 1), "exports": rows}
    print("| type | seconds | GGUF MiB | peak RSS MiB | llama.cpp vs transformers: max abs logit error / max abs logit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        error = row["llama_cpp_max_abs_logit_error"]
        print(f"| {row['type']} | {row['seconds']} | {row['file_mib']} | {row['peak_rss_mib']:.0f} | "
              + ("—" if error is None else f"{error:.4f} / {row['max_abs_logit']:.2f}") + " |")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
