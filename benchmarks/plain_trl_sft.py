"""The baseline: the QLoRA script a user writes by hand from the transformers, PEFT and TRL docs.

It imports nothing from the studio. The hyperparameters are read from a studio run config (TOML) so
that a comparison trains the same model on the same data with the same settings; everything else is
the libraries' defaults. Conversations become prompt/completion pairs (the last assistant reply is
the completion), so TRL trains on the reply only, as the studio does.

    python benchmarks/plain_trl_sft.py CONFIG.toml --output DIR [--max-steps N]

CONFIG.toml is a config as the studio saves it (every key present: *Copy as command* or
`studio.core.config.settings.save_config`).

Each optimiser step prints one JSON line {"step": n, "time": unix_seconds, "loss": x} on stdout
(a TrainerCallback, the way a user would watch a run) so a benchmark can time it the same way it
times the studio's events.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _resolve(base: Path, value: str) -> str:
    path = Path(value)
    return str(path if path.is_absolute() or not (base / path).exists() else base / path)


def load_settings(config_path: Path) -> dict:
    settings = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    base = Path(config_path).resolve().parent
    settings["model"]["name_or_path"] = _resolve(base, settings["model"]["name_or_path"])
    settings["data"]["train_file"] = _resolve(base, settings["data"]["train_file"])
    return settings


def to_prompt_completion(example: dict) -> dict:
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def build_trainer(settings: dict, output_dir: Path, *, max_steps: int | None = None, callbacks=(),
                  dataset=None):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    model_settings, lora, train = settings["model"], settings["lora"], settings["training"]
    quant = settings["quantization"]
    cuda = torch.cuda.is_available()
    dtype = quant["compute_dtype"]
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else "float32"
    dtype = getattr(torch, dtype)

    kwargs = {"dtype": dtype, "attn_implementation": model_settings.get("attn_implementation", "sdpa")}
    if quant["mode"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant["bnb_4bit_quant_type"],
            bnb_4bit_use_double_quant=quant["bnb_4bit_use_double_quant"], bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": "cuda:0" if cuda else "cpu"}
    elif quant["mode"] == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": "cuda:0" if cuda else "cpu"}
    tokenizer = AutoTokenizer.from_pretrained(model_settings["name_or_path"])
    model = AutoModelForCausalLM.from_pretrained(model_settings["name_or_path"], **kwargs)

    if dataset is None:
        dataset = load_dataset("json", data_files=settings["data"]["train_file"], split="train")
        dataset = dataset.map(to_prompt_completion, remove_columns=dataset.column_names)
    target = lora["target_modules"]
    peft_config = LoraConfig(
        r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"], bias=lora["bias"],
        target_modules="all-linear" if target == ["all-linear"] else target, task_type="CAUSAL_LM",
        use_rslora=lora["use_rslora"], use_dora=lora["use_dora"])
    optim = train["optim"]
    if optim == "auto":
        optim = "paged_adamw_8bit" if cuda else "adamw_torch"
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; a user writes the
    # name their installed version documents.
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = SFTConfig(
        output_dir=str(output_dir),
        learning_rate=train["learning_rate"],
        num_train_epochs=train["num_train_epochs"],
        max_steps=max_steps if max_steps is not None else train["max_steps"],
        per_device_train_batch_size=train["per_device_train_batch_size"],
        gradient_accumulation_steps=train["gradient_accumulation_steps"],
        max_length=train["max_length"],
        lr_scheduler_type=train["lr_scheduler_type"],
        warmup_steps=train["warmup_ratio"],
        weight_decay=train["weight_decay"],
        max_grad_norm=train["max_grad_norm"],
        optim=optim,
        **{checkpointing: train["gradient_checkpointing"]},
        seed=train["seed"],
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        save_total_limit=train["save_total_limit"],
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=list(callbacks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--max-steps", type=int)
    args = parser.parse_args(argv)

    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                print(json.dumps({"step": state.global_step, "time": time.time(), "loss": logs["loss"]}),
                      flush=True)

    trainer = build_trainer(load_settings(args.config), args.output, max_steps=args.max_steps,
                            callbacks=[StepTimes()])
    trainer.train()
    trainer.save_model(str(args.output / "adapter"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
