"""What tests/core/test_train_speed_benchmark.py and tests/slow/test_train_speed_benchmark_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import importlib.util
import sys
from pathlib import Path
import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_speed():
    return _load("train_speed")
