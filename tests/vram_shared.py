"""What tests/core/plan/test_vram.py and tests/slow/test_vram_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations


LLAMA_8B_TOML = """
[model]
name_or_path = "llama-3.1-8b"

[lora]
r = 16

[training]
max_length = 2048
per_device_train_batch_size = 1
gradient_checkpointing = true
optim = "paged_adamw_8bit"
"""
