"""What tests/core/test_gpu_speed_benchmark.py and tests/slow/test_gpu_speed_benchmark_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import importlib.util
import sys
from pathlib import Path
import pytest


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speed.py"


# studio.core.system.demo's model: hidden 128, MLP 256, 2 layers, 4 heads of 32, 2 key/value heads, vocabulary 1024.
DEMO = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1024}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_speed"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
