"""QLoRA fidelity: how often each way of using a 4-bit-trained adapter answers like the trained model.

For the demo model and for an NF4-sensitive copy of it (demo.make_nf4_sensitive: one outlier per NF4
block, so its 4-bit rounding matters as a real pretrained model's does), a QLoRA run is trained on the
demo dataset; then every path is asked the run's training prompts, greedy, and its replies are compared
with the trained model's (the adapter on the 4-bit base it trained against, loaded with plain PEFT):

    16-bit base + adapter · 4-bit base + adapter (studio chat) · merged into the original 16-bit weights ·
    merged into the dequantised NF4 weights (the studio's merge) · GGUF f16 · GGUF q8_0

GGUF files are read back with transformers' GGUF loader (the file's own weights). Prints a Markdown table
and writes JSON with --output.

    python benchmarks/qlora_fidelity.py --output benchmarks/results/qlora-fidelity.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NEW_TOKENS = 40


def _greedy(model, tokenizer, prompts) -> list[str]:
    import torch

    out = []
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def _train(work: Path, demo, *, sensitive: bool, steps: int) -> Path:
    from studio.core.config.settings import load_config, save_config
    from studio.core.system.demo import make_nf4_sensitive
    from studio.core.runs.events import EventWriter
    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    model_dir = work / "model"
    shutil.copytree(demo.model_dir, model_dir)
    if sensitive:
        make_nf4_sensitive(model_dir)
    config = load_config(demo.config_path)
    config.model.name_or_path = str(model_dir)
    config.training.max_steps = steps
    run = RunDirectory(work / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    writer = EventWriter(run.events_path)
    try:
        run_training(config, run, writer.write)
    finally:
        writer.close()
    return run.path


def measure(work: Path, demo, *, sensitive: bool, steps: int) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from studio.core.chat.model import ChatModel
    from studio.core.export.gguf import export_gguf
    from studio.core.export.merge import merge_adapter

    run = _train(work, demo, sensitive=sensitive, steps=steps)
    rows = [json.loads(line)["messages"] for line in demo.dataset_path.read_text(encoding="utf-8").splitlines()]
    prompts = [messages[:-1] for messages in rows]
    wanted = [messages[-1]["content"] for messages in rows]
    tokenizer = AutoTokenizer.from_pretrained(str(run / "adapter"))
    base = str(work / "model")
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)

    def adapter_on(**kwargs):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **kwargs)
        return PeftModel.from_pretrained(model, str(run / "adapter")).eval()

    def folder(path: Path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()

    def gguf(kind: str):
        result = export_gguf(run, work / f"gguf-{kind}" / f"model-{kind}.gguf", gguf_type=kind)
        return AutoModelForCausalLM.from_pretrained(str(result.path.parent), gguf_file=result.path.name,
                                                    dtype=torch.float32).eval()

    trained = _greedy(adapter_on(quantization_config=nf4, device_map={"": "cpu"}), tokenizer, prompts)
    paths = {
        "16-bit base + adapter": lambda: adapter_on(),
        "4-bit base + adapter (studio chat default)": lambda: ChatModel.load(run).model,
        "merged into the original 16-bit weights": lambda: folder(merge_adapter(run, work / "merged-original",
                                                                                 weights="original", verify=0)),
        "merged into the dequantised NF4 weights (studio default)": lambda: folder(merge_adapter(
            run, work / "merged-trained")),
        "GGUF f16 (from the run)": lambda: gguf("f16"),
        "GGUF q8_0 (from the run)": lambda: gguf("q8_0"),
    }
    results = {"model": "NF4-sensitive demo model" if sensitive else "demo model", "steps": steps,
               "prompts": len(prompts),
               "trained_model_right": sum(a.strip() == b.strip() for a, b in zip(trained, wanted)), "paths": {}}
    for name, load in paths.items():
        started = time.perf_counter()
        replies = _greedy(load(), tokenizer, prompts)
        results["paths"][name] = {
            "identical_to_trained": sum(a == b for a, b in zip(replies, trained)),
            "right": sum(a.strip() == b.strip() for a, b in zip(replies, wanted)),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write the results as JSON")
    parser.add_argument("--steps", type=int, default=120, help="training steps per run (default 120)")
    args = parser.parse_args()

    import torch

    from studio.core.system.demo import build_demo
    from studio.core.config.presets import write_demo_config

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="qlora-fidelity-") as tmp:
        demo = build_demo(Path(tmp) / "demo")
        write_demo_config(demo)
        all_results = []
        for sensitive in (False, True):
            work = Path(tmp) / ("nf4-sensitive-run" if sensitive else "demo-run")
            work.mkdir()
            all_results.append(measure(work, demo, sensitive=sensitive, steps=args.steps))
    names = list(all_results[0]["paths"])
    print("| path | " + " | ".join(r["model"] for r in all_results) + " |")
    print("| --- |" + " --- |" * len(all_results))
    for name in names:
        cells = [f"{r['paths'][name]['identical_to_trained']}/{r['prompts']}" for r in all_results]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| (the trained model's replies that are the dataset's answer) | "
          + " | ".join(f"{r['trained_model_right']}/{r['prompts']}" for r in all_results) + " |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(all_results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
