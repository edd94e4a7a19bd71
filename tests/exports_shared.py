"""What tests/core/export/test_exports.py and tests/slow/test_exports_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from pathlib import Path
import numpy as np


def _tiny_model(family: str, folder: Path, tokenizer_dir: Path):
    import torch
    from transformers import (
        AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
    )

    dims = dict(vocab_size=1088, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1, bos_token_id=0,
                eos_token_id=4, pad_token_id=5, tie_word_embeddings=False)
    if family == "qwen2":
        model_class, config = Qwen2ForCausalLM, Qwen2Config(**dims)
    elif family == "mistral":
        model_class, config = MistralForCausalLM, MistralConfig(**dims, sliding_window=None)
    else:  # Llama 3.1 with its rope scaling, short original context so that the scaling matters
        model_class, config = LlamaForCausalLM, LlamaConfig(**dims, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config).eval()
        if family == "qwen2":  # Qwen2 has q/k/v biases: make them matter
            with torch.no_grad():
                for layer in model.model.layers:
                    for bias in (layer.self_attn.q_proj.bias, layer.self_attn.k_proj.bias, layer.self_attn.v_proj.bias):
                        bias.normal_(0, 0.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return model
