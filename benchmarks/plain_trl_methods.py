"""The baseline for every method: DPO, ORPO, KTO and GRPO as a user writes them from the TRL docs.

It imports nothing from the studio (the SFT baseline is benchmarks/plain_trl_sft.py, whose settings reader
and model loading this reuses). The hyperparameters come from a studio run config (TOML); plain-text records
become TRL's conversational records, as the TRL docs show them; GRPO's reward is a hand-written "contains the
expected reply" function.

    python benchmarks/plain_trl_methods.py CONFIG.toml --output DIR

Each optimiser step prints one JSON line {"step": n, "time": unix_seconds} on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_trl_sft  # noqa: E402


def _turn(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def conversational(method: str, row: dict) -> dict:
    if method in ("dpo", "orpo"):
        return {"prompt": _turn("user", row["prompt"]), "chosen": _turn("assistant", row["chosen"]),
                "rejected": _turn("assistant", row["rejected"])}
    if method == "kto":
        return {"prompt": _turn("user", row["prompt"]), "completion": _turn("assistant", row["completion"]),
                "label": bool(row["label"])}
    return {"prompt": _turn("user", row["prompt"]), "expected": row["completion"]}


def contains(prompts, completions, expected, **kwargs):
    return [float(e.strip().lower() in c[-1]["content"].lower()) for c, e in zip(completions, expected)]


def build_trainer(settings: dict, output_dir: Path, callbacks=()):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    method, train = settings["training"]["method"], settings["training"]
    if method == "sft":
        return plain_trl_sft.build_trainer(settings, output_dir, callbacks=callbacks)
    quant, lora = settings["quantization"], settings["lora"]
    dtype = torch.float32 if quant["compute_dtype"] in ("auto", "float32") else getattr(torch, quant["compute_dtype"])
    kwargs = {"dtype": dtype}
    if quant["mode"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant["bnb_4bit_quant_type"],
            bnb_4bit_use_double_quant=quant["bnb_4bit_use_double_quant"], bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": "cpu"}
    name = settings["model"]["name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    dataset = load_dataset("json", data_files=settings["data"]["train_file"], split="train")
    dataset = dataset.map(lambda row: conversational(method, row), remove_columns=dataset.column_names)
    target = lora["target_modules"]
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
                             target_modules="all-linear" if target == ["all-linear"] else target,
                             task_type="CAUSAL_LM")
    common = dict(output_dir=str(output_dir), learning_rate=train["learning_rate"], max_steps=train["max_steps"],
                  per_device_train_batch_size=train["per_device_train_batch_size"],
                  gradient_accumulation_steps=train["gradient_accumulation_steps"],
                  lr_scheduler_type=train["lr_scheduler_type"], warmup_steps=train["warmup_ratio"],
                  optim="adamw_torch", seed=train["seed"], logging_steps=1, save_steps=train["save_steps"],
                  use_cpu=True, report_to="none", disable_tqdm=True)
    if method == "dpo":
        from trl import DPOConfig as Config, DPOTrainer as Trainer

        args, extra = Config(**common, beta=settings[method]["beta"], max_length=train["max_length"]), {}
    elif method == "kto":
        from trl import KTOConfig as Config, KTOTrainer as Trainer

        args, extra = Config(**common, beta=settings[method]["beta"], max_length=train["max_length"]), {}
    elif method == "orpo":
        from trl.experimental.orpo import ORPOConfig as Config, ORPOTrainer as Trainer

        args, extra = Config(**common, beta=settings[method]["beta"], max_length=train["max_length"]), {}
    else:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        grpo = settings["grpo"]
        args = Config(**common, beta=grpo["kl_coefficient"], num_generations=grpo["num_generations"],
                      max_completion_length=grpo["max_completion_length"])
        extra = {"reward_funcs": [contains]}
    return Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   peft_config=peft_config, callbacks=list(callbacks), **extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    settings = plain_trl_sft.load_settings(args.config)
    if settings["training"].get("cpu_threads", 0) > 0:  # the same thread count as the studio run it is compared to
        torch.set_num_threads(settings["training"]["cpu_threads"])

    class StepTimes(TrainerCallback):
        def on_step_end(self, _args, state, _control, **_kwargs):
            print(json.dumps({"step": state.global_step, "time": time.time()}), flush=True)

    trainer = build_trainer(settings, args.output, callbacks=[StepTimes()])
    trainer.train()
    trainer.save_model(str(args.output / "adapter"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
