"""What tests/core/plan/test_planner.py and tests/slow/test_planner_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from studio.core.config.settings import RunConfig
from studio.core.plan.vram import ModelShape, estimate_vram


# A toy Llama with 8 layers (more than the offloading stash of 5): hidden 64, MLP 128, 4 heads of 16, 2 kv heads.
TOY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 8,
       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}


def _toy_config(**training) -> RunConfig:
    config = RunConfig()
    config.lora.r, config.lora.lora_dropout = 8, 0.0
    config.training.per_device_train_batch_size, config.training.max_length = 1, 16
    config.training.optim = "paged_adamw_8bit"
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


MEASURED_TOKENS = 32


def _toy_peft_model(lora_dropout: float):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TOY, attn_implementation="sdpa")).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=lora_dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    model.train()
    model.enable_input_require_grads()  # the first layer's input needs a gradient, as with checkpointing
    return model


def _saved_bytes(model, every_n: int | None = None) -> int:
    """Bytes the decoder's forward pass keeps for the backward pass (no checkpointing when `every_n` is None)."""
    import torch

    decoder = model.base_model.model
    if every_n is not None:
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                                every_n_layers=every_n)
    parameters = {param.untyped_storage().data_ptr() for param in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(4, 250, (1, MEASURED_TOKENS), generator=torch.Generator().manual_seed(0))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            decoder.model(input_ids=ids, use_cache=False)
    finally:
        if every_n is not None:
            decoder.activation_checkpointing_disable()
    return sum(storages.values())


def _activation_term(lora_dropout: float = 0.0, **training) -> int:
    """The estimate's activation term for the toy at MEASURED_TOKENS tokens, batch 1."""
    config = _toy_config(max_length=MEASURED_TOKENS, **training)
    config.lora.lora_dropout = lora_dropout
    breakdown = estimate_vram(ModelShape.from_config(TOY, "toy"), config).breakdown
    return next(size for name, size in breakdown.items() if name.startswith("activations"))


def _within(measured: int, estimated: int, tolerance: float = 0.05) -> bool:
    return abs(measured - estimated) <= tolerance * estimated
