"""Factories where our config names meet the libraries': BitsAndBytesConfig, LoraConfig, SFTConfig.

Keeping these in one place means a library API change touches one module, and the resolved values
(device, dtype, optimiser) are decided once and recorded in the run's config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config.settings import RunConfig


@dataclass(frozen=True)


class Hardware:
    """What the training process runs on, decided once per run."""

    device: str  # "cuda" or "cpu"
    compute_dtype: str  # "bfloat16" | "float16" | "float32"
    optim: str


def resolve_hardware(config: RunConfig) -> Hardware:
    """Pick device, compute dtype and optimiser from what this machine has and the 'auto' settings."""
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = config.quantization.compute_dtype
    if dtype == "auto":
        if not cuda:
            dtype = "float32"  # CPU kernels for half types are slow or missing
        elif torch.cuda.is_bf16_supported():
            dtype = "bfloat16"
        else:
            dtype = "float16"
    optim = config.training.optim
    if optim == "auto":
        optim = "paged_adamw_8bit" if cuda else "adamw_torch"
    return Hardware(device=device, compute_dtype=dtype, optim=optim)


def cpu_thread_count(config: RunConfig, available: int | None = None) -> int:
    """Threads a CPU run computes with: the config's, or one fewer than the cores this process may use.

    torch's default (every core) lets any other busy process — the window, a chat, a second run — stall the
    thread that every parallel matrix product waits for; one free core keeps steps steady.
    """
    if config.training.cpu_threads > 0:
        return config.training.cpu_threads
    if available is None:
        import os

        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, available - 1)


def keep_adapter_in_compute_dtype(model: Any, compute_dtype: str) -> int:
    """Undo TRL's bfloat16 cast of QLoRA adapters unless the run computes in bfloat16; returns tensors cast.

    TRL's SFTTrainer casts every trainable parameter of a quantised model to bfloat16 (the QLoRA paper's
    recipe for bf16 GPUs). Where the run computes in float32 (a CPU) or float16 (a GPU without bf16), a bf16
    adapter only loses precision — its updates round to 8 bits of mantissa — and on a CPU without bf16
    kernels it is also slower; float16 AMP cannot even unscale bf16 gradients. Those runs keep float32.
    """
    import torch

    if compute_dtype == "bfloat16":
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.to(torch.float32)
            cast += 1
    return cast


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def quantization_config(config: RunConfig, hardware: Hardware, *, embedding_on_cpu: bool = False) -> Any | None:
    """BitsAndBytesConfig for 4/8-bit loading, or None for 16-bit LoRA. `embedding_on_cpu` (see `device_map`) turns
    on bitsandbytes' switch for modules placed on the CPU, without which transformers refuses a device_map that
    mixes the GPU and the CPU for a quantised model."""
    from transformers import BitsAndBytesConfig

    q = config.quantization
    if q.mode == "none":
        return None
    cpu_modules = {"llm_int8_enable_fp32_cpu_offload": True} if embedding_on_cpu else {}
    if q.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, **cpu_modules)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(hardware.compute_dtype),
        **cpu_modules,
    )


EMBEDDING_MODULE = "model.embed_tokens"
LLAMA_LAYOUT_MODULES = ("model.layers", "model.norm", "model.rotary_emb", "lm_head")
"""The other top-level modules of the Llama layout (Llama, Mistral, Qwen2/3, Gemma: the layout the estimate covers)."""


def device_map(config: RunConfig, hardware: Hardware, *, tied_embeddings: bool, local_rank: int = 0) -> dict[str, Any]:
    """Where a quantised base's modules are loaded: all on this process's device, or — `training.embedding_on_cpu`
    where it applies (`plan.vram.embedding_on_cpu_applies`) — the input embedding on "cpu" and the rest on the GPU.

    accelerate's dispatch then keeps the embedding's weights in CPU RAM and copies them to the GPU for each forward
    pass's lookup (a module mapped to the CPU runs on the main device); the frozen lookup saves nothing for the
    backward pass, so the backward pass runs without them. The map names every top-level module of the Llama layout
    rather than "" for the rest: with "" accelerate would place every submodule, the embedding included, on the GPU
    before offloading it.
    """
    from studio.core.plan.vram import embedding_on_cpu_applies

    device = f"cuda:{local_rank}" if hardware.device == "cuda" else "cpu"
    if not embedding_on_cpu_applies(config, tied=tied_embeddings, device=hardware.device):
        return {"": device}
    return {EMBEDDING_MODULE: "cpu", **dict.fromkeys(LLAMA_LAYOUT_MODULES, device)}


def lora_config(config: RunConfig) -> Any:
    """PEFT LoraConfig for a causal LM."""
    from peft import LoraConfig

    lora = config.lora
    targets: str | list[str] = lora.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # PEFT's own shortcut: every linear layer except the output head
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=targets,
        bias=lora.bias,
        modules_to_save=list(lora.modules_to_save) or None,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        task_type="CAUSAL_LM",
    )


def early_stopping_active(config: RunConfig, *, has_eval: bool) -> bool:
    """Early stopping needs eval data, evaluations and a patience above 0."""
    t = config.training
    return has_eval and t.early_stopping_patience > 0 and t.eval_strategy != "no"


def extra_callbacks(config: RunConfig, *, has_eval: bool) -> list[Any]:
    """Callbacks the run config asks for: early stopping (transformers' EarlyStoppingCallback) with a
    checkpoint at each new best evaluation, so the run can end with its best adapter."""
    if not early_stopping_active(config, has_eval=has_eval):
        return []
    from transformers import EarlyStoppingCallback

    from studio.core.train.callback import SaveEachNewBestCallback

    return [EarlyStoppingCallback(early_stopping_patience=config.training.early_stopping_patience),
            SaveEachNewBestCallback()]


def trainer_config(config: RunConfig, hardware: Hardware, output_dir: Path, *, has_eval: bool,
                   padding_free: bool = False) -> Any:
    """The run's TRL config (SFTConfig, DPOConfig, …): the TrainingArguments every method shares and its method's
    own, from the method's trainer half (core.methods)."""
    from studio.core.methods.trainers import method_training
    from studio.core.plan.speedups import activation_offloading_applies

    return method_training(config).args(training_arguments(config, hardware, output_dir, has_eval=has_eval),
                                        offloading=activation_offloading_applies(config, hardware.device),
                                        padding_free=padding_free)


sft_config = trainer_config
"""Its name from when SFT was the only method (tests and benchmarks build an SFT run's config with it)."""


def _require_every_n_layers() -> None:
    """transformers before 5.24 has no `every_n_layers` and would hand it to torch's checkpoint as a layer argument."""
    import inspect

    import transformers
    from transformers import PreTrainedModel

    enable = getattr(PreTrainedModel, "activation_checkpointing_enable", PreTrainedModel.gradient_checkpointing_enable)
    if "every_n_layers" not in inspect.signature(enable).parameters:
        raise RuntimeError(f"training.checkpointing_every_n_layers needs transformers 5.24 or newer (every_n_layers); "
                           f"this is {transformers.__version__}: set it to 1 or upgrade transformers")


def training_arguments(config: RunConfig, hardware: Hardware, output_dir: Path, *, has_eval: bool) -> dict[str, Any]:
    """The TrainingArguments every method's TRL config shares (SFTConfig, DPOConfig, ... subclass it)."""
    from transformers import TrainingArguments

    from studio.core.plan.vram import checkpointing_every_n_layers

    t = config.training
    kwargs: dict[str, Any] | None = {"use_reentrant": False} if t.gradient_checkpointing else None
    if kwargs is not None and (every_n := checkpointing_every_n_layers(config)) > 1:
        _require_every_n_layers()
        kwargs["every_n_layers"] = every_n  # the Trainer takes it out and passes it to activation_checkpointing_enable
    checkpointing = {"gradient_checkpointing": t.gradient_checkpointing, "gradient_checkpointing_kwargs": kwargs}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        # transformers >= 5.2x renamed gradient_checkpointing* (the old names warn until v6).
        checkpointing = {k.replace("gradient_", "activation_"): v for k, v in checkpointing.items()}
    return dict(
        **checkpointing,
        output_dir=str(output_dir),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,  # 0 means "use the epochs" too (transformers: 1 step)
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value below 1 is a fraction of the steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=hardware.optim,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy=t.eval_strategy if has_eval else "no",
        eval_steps=t.eval_steps if has_eval and t.eval_strategy == "steps" else None,
        # EarlyStoppingCallback compares this metric, and the trainer tracks the best step by it; the run then
        # writes the adapter from that step's checkpoint (training.best_checkpoint) rather than reloading the
        # model as load_best_model_at_end would.
        metric_for_best_model="eval_loss" if early_stopping_active(config, has_eval=has_eval) else None,
        greater_is_better=False if early_stopping_active(config, has_eval=has_eval) else None,
        bf16=hardware.compute_dtype == "bfloat16",
        fp16=hardware.compute_dtype == "float16",
        use_cpu=hardware.device == "cpu",
        report_to="none",
        disable_tqdm=True,  # the studio shows progress; tqdm bars would fill the log with carriage returns
        dataloader_num_workers=0,
    )
