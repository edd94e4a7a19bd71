"""K-quant GGUF through llama.cpp's own quantizer, chosen by the card, verified per quant (issue 23).

The test model (benchmarks/gguf_quants.py's builders) has hidden and MLP sizes that are multiples of 256, so llama.cpp's
K-quant blocks fit every matrix; the demo's 128-wide model is the one that falls back. llama-cpp-python is installed in
this environment (the `llama-cpp` extra, .ci/run): these tests run llama.cpp, in its child process, and never skip.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from studio.core.export.gguf import write_gguf
from studio.core.export.quantize import read_tensor_types
from studio.core.plan.gguf_fit import (
    Budget, choose_gguf_type, compute_buffer_bytes, gguf_tensor_types, kv_cache_bytes, weights_bytes,
)
from studio.core.plan.vram import GIB, MIB, ModelShape
from export_quant_shared import _bench, kquant_exports, kquant_run  # noqa: F401  (shared with the other half)

ROOT = Path(__file__).resolve().parents[3]








def _shape(model_dir: Path) -> ModelShape:
    return ModelShape.from_config(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))


def test_k_quants_carry_their_file_type_and_llama_cpps_tensor_types(kquant_run, kquant_exports):
    shape = _shape(kquant_run.parent / "model")
    for gguf_type, exported in kquant_exports.items():
        read = read_tensor_types(exported.path, gguf_type)
        assert read.file_type == f"MOSTLY_{gguf_type.upper()}", gguf_type
        assert not read.fallbacks, "every row holds whole 256-value blocks"
        # The rules plan.gguf_fit sizes with are llama.cpp's: the file holds exactly the predicted type per tensor.
        assert read.types == {name: kind for name, (kind, _) in gguf_tensor_types(shape, gguf_type).items()}
    q4 = Counter(read_tensor_types(kquant_exports["q4_k_m"].path).types.values())
    # Q4_K_M: most matrices Q4_K; Q6_K for the output (tied: the embedding) and layer 1's attn_v and ffn_down.
    assert q4 == {"Q4_K": 12, "Q6_K": 3, "F32": 5}
    q4_types = read_tensor_types(kquant_exports["q4_k_m"].path).types
    assert q4_types["blk.1.attn_v.weight"] == q4_types["blk.1.ffn_down.weight"] == "Q6_K"
    assert Counter(read_tensor_types(kquant_exports["q6_k"].path).types.values()) == {"Q6_K": 15, "F32": 5}
    assert "Tensor types: Q4_K ×12, F32 ×5, Q6_K ×3." in kquant_exports["q4_k_m"].notes
    sizes = [kquant_exports[t].path.stat().st_size for t in ("q4_k_m", "q5_k_m", "q6_k")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_the_demos_128_wide_rows_fall_back_and_are_named(demo_assets, tmp_path):
    exported = write_gguf(demo_assets.model_dir, tmp_path / "demo-q4_k_m.gguf", gguf_type="q4_k_m")
    types = exported.tensor_types
    assert types.file_type == "MOSTLY_Q4_K_M"
    assert "blk.0.attn_q.weight: Q5_0 (rows of 128 values, not a multiple of 256)" in types.fallbacks
    assert "token_embd.weight: Q8_0 (rows of 128 values, not a multiple of 256)" in types.fallbacks
    assert types.types["blk.0.ffn_down.weight"] == "Q4_K", "its rows are 256 values"
    note = next(n for n in exported.notes if "fell back" in n)
    assert note.startswith("13 tensor(s) fell back to another type in llama.cpp (rows not a multiple of 256)")
    assert types.types == {n: k for n, (k, _) in gguf_tensor_types(_shape(demo_assets.model_dir), "q4_k_m").items()}


def test_the_memory_sizes_are_what_llama_cpp_allocates(kquant_run, kquant_exports, tmp_path):
    """weights, KV cache and compute buffer against llama.cpp's own log lines for the test model, at two contexts."""
    from studio.core.eval.verify import llama_child_command

    import subprocess

    shape = _shape(kquant_run.parent / "model")
    exported = kquant_exports["q4_k_m"]
    for context in (2048, 5000):
        command = llama_child_command(Path("x"), Path("y"))[:3] + ["measure", str(exported.path), str(context)]
        log = subprocess.run(command, capture_output=True, text=True, timeout=120).stderr

        def logged(what: str) -> float:
            return sum(float(m) for m in re.findall(rf"{what} size =\s+([0-9.]+) MiB", log)) * MIB

        assert logged("model buffer") == pytest.approx(weights_bytes(shape, "q4_k_m"), rel=0.01, abs=0.02 * MIB)
        assert logged("KV buffer") == kv_cache_bytes(shape, context)  # exact: f16, every layer, cells padded to 256
        assert logged("compute buffer") == pytest.approx(compute_buffer_bytes(shape, context), rel=0.03)


def test_the_best_type_that_fits_is_preselected_and_why():
    shape = ModelShape.from_config(json.loads((ROOT / "resources/model_configs/llama-3.1-8b.json").read_text()))
    choice = choose_gguf_type(shape, 4096, Budget(8 * GIB, "cuda", "RTX 4060"))
    assert choice.chosen == "q6_k" and "Q8_0 would need 8.2 GiB" in choice.reason
    # The published Llama-3.1-8B files (bartowski's GGUFs): Q4_K_M 4.92 GB, Q5_K_M 5.73 GB, Q6_K 6.60 GB, Q8_0 8.54 GB.
    sizes = {t.gguf_type: round(t.file_bytes / 1e9, 2) for t in choice.types}
    assert (sizes["q4_k_m"], sizes["q5_k_m"], sizes["q6_k"], sizes["q8_0"]) == (4.92, 5.73, 6.59, 8.54)
    longer = choose_gguf_type(shape, 8192, Budget(8 * GIB, "cuda"))
    assert longer.chosen == "q5_k_m", "a 1 GiB KV cache and 576 MiB of compute leave no room for Q6_K"
    none = choose_gguf_type(shape, 4096, Budget(4 * GIB, "cuda"))
    assert none.chosen == "q4_k_m" and "part of it will run on the CPU" in none.reason
    legacy = choose_gguf_type(shape, 4096, Budget(8 * GIB, "cuda"), k_quants=False)
    assert legacy.chosen == "q5_1" and not legacy.fit("q4_k_m").available
    cpu = choose_gguf_type(shape, 4096, Budget(16 * GIB, "cpu", "RAM"))
    assert cpu.chosen == "q8_0" and "of RAM" in cpu.reason, "the embedding counts in RAM too"


def test_cli_refuses_a_context_shorter_than_llama_cpps_smallest(demo_assets, tmp_path, run_studio):
    result = run_studio("export", "gguf", demo_assets.model_dir, "--output", tmp_path / "x.gguf", "--context", "100")
    assert result.returncode == 2 and "context 100: at least 256 tokens" in result.stderr.strip().splitlines()[-1]
