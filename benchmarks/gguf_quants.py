"""Every GGUF type on a model K-quants really apply to: size, seconds to export, and agreement with the trained model.

    python benchmarks/gguf_quants.py --output gguf-quants.json

The test model (`build_kquant_model`): the offline demo's tokenizer, data and QLoRA settings with a Llama model whose
hidden size (256) and MLP size (512) are multiples of 256, so llama.cpp's K-quant blocks fit every matrix (the demo's
128-wide model makes llama.cpp fall back to Q5_0/Q8_0; the demo stays as it is). Built offline, the same bytes every
time, its linear weights on the NF4 grid like the demo's (so the adapter trained on the 4-bit base answers the same
on the 16-bit merge). The studio trains it (`train_kquant_run`, the demo's 60 steps), then each type is exported from
the run by `export_gguf` and verified (`verify_export`, answered by llama.cpp in its child process): replies
identical to the trained model's, the tool-call metric of the export against the trained model's, and the seconds
the export took (merge + write + quantize). tests/core/test_export_quant.py uses the same builders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KQUANT_DIMS = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "tie_word_embeddings": True, "initializer_range": 0.1}
NF4_BLOCK = 64


def build_kquant_model(root: Path) -> tuple[Path, Path]:
    """(model folder, run config) of the 256-multiple test model under `root`, with the demo's data."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from studio.core.config.presets import cpu_demo_config
    from studio.core.config.settings import save_config
    from studio.core.system.demo import _NF4_CODES, build_demo

    root = Path(root)
    demo = build_demo(root / "demo")
    tokenizer = AutoTokenizer.from_pretrained(str(demo.model_dir))
    demo_config = json.loads((demo.model_dir / "config.json").read_text(encoding="utf-8"))
    config = LlamaConfig(vocab_size=demo_config["vocab_size"], max_position_embeddings=512,
                         bos_token_id=demo_config["bos_token_id"], eos_token_id=demo_config["eos_token_id"],
                         pad_token_id=demo_config["pad_token_id"], **KQUANT_DIMS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    codes = torch.tensor(_NF4_CODES)
    with torch.no_grad():  # onto the NF4 grid, as the demo model (demo._snap_linear_weights_to_nf4 says why)
        for layer in model.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    blocks = module.weight.reshape(-1, NF4_BLOCK)
                    absmax = blocks.abs().amax(dim=1, keepdim=True)
                    nearest = (blocks / absmax).unsqueeze(-1).sub(codes).abs().argmin(dim=-1)
                    module.weight.copy_((codes[nearest] * absmax).reshape(module.weight.shape))
    demo_generation = GenerationConfig.from_pretrained(str(demo.model_dir))
    model.generation_config = demo_generation
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    run_config = cpu_demo_config(model_dir, demo.dataset_path)
    run_config.name = "kquant"
    config_path = root / "kquant.toml"
    save_config(run_config, config_path)
    return model_dir, config_path


def train_kquant_run(root: Path) -> Path:
    """The studio's QLoRA run of the test model (the demo's settings); returns the run folder."""
    from studio.core.config.settings import load_config, save_config
    from studio.core.runs.events import EventWriter
    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    _, config_path = build_kquant_model(root)
    config = load_config(config_path)
    run = RunDirectory(Path(root) / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    writer = EventWriter(run.events_path)
    try:
        status = run_training(config, run, writer.write)
    finally:
        writer.close()
    if status != "completed":
        raise RuntimeError(f"training the test model ended {status}")
    return run.path


def measure(run: Path, out: Path, gguf_type: str) -> dict:
    from studio.core.export.gguf import export_gguf
    from studio.core.export.jobs import verify_export

    started = time.perf_counter()
    result = export_gguf(run, out / f"kquant-{gguf_type}.gguf", gguf_type=gguf_type)
    seconds = time.perf_counter() - started
    check = verify_export(run, result.path)
    return {"type": gguf_type, "file_type": result.tensor_types.file_type, "tensor_types": result.tensor_types.summary(),
            "bytes": result.path.stat().st_size, "export_seconds": round(seconds, 2), "identical": check.identical,
            "total": check.total, "task_export": check.task_export, "task_studio": check.task_studio,
            "verdict": check.verdict(), "differences": [c.first_difference() for c in check.differing]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("gguf-quants.json"))
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temporary folder)")
    parser.add_argument("--types", default="f16,q8_0,q6_k,q5_k_m,q4_k_m,q5_1,q4_0")
    args = parser.parse_args()
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="gguf-quants-"))
    try:
        started = time.perf_counter()
        run = train_kquant_run(work)
        print(f"trained in {time.perf_counter() - started:.0f} s: {run}", file=sys.stderr)
        rows = []
        for gguf_type in args.types.split(","):
            rows.append(measure(run, work / "exports", gguf_type))
            print(json.dumps(rows[-1]), file=sys.stderr)
        args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print("| type | file | KiB | export s | identical replies | tool call right: export (trained) | verdict |")
        print("|---|---|---:|---:|---:|---:|---|")
        for row in rows:
            print(f"| {row['type']} | {row['tensor_types']} | {row['bytes'] / 1024:.0f} | {row['export_seconds']:.1f} "
                  f"| {row['identical']}/{row['total']} | {row['task_export']}/{row['total']} "
                  f"({row['task_studio']}/{row['total']}) | {row['verdict']} |")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
