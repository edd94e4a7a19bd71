"""What tests/core/export/test_export_quant.py and tests/slow/test_export_quant_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import importlib.util
import sys
from pathlib import Path
import pytest
from studio.core.export.gguf import export_gguf

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gguf_quants", ROOT / "benchmarks" / "gguf_quants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gguf_quants"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kquant_run(tmp_path_factory) -> Path:
    """The studio's QLoRA run (the demo's 60 steps, ~15 s) of the 256-multiple test model."""
    return _bench().train_kquant_run(tmp_path_factory.mktemp("kquant"))


@pytest.fixture(scope="module")
def kquant_exports(kquant_run, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("kquant-gguf")
    return {t: export_gguf(kquant_run, out / f"kquant-{t}.gguf", gguf_type=t) for t in ("q4_k_m", "q5_k_m", "q6_k")}
