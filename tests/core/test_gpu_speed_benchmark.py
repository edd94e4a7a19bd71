"""benchmarks/gpu_speed.py without a GPU: its arithmetic by hand, and its whole pipeline on the CPU (--cpu-smoke)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from studio.core.plan.vram import GIB, MIB
from gpu_speed_benchmark_shared import DEMO, SCRIPT, bench  # noqa: F401  (shared with the other half)






def test_matmul_parameters_and_flops_per_token_by_hand(bench):
    # q 128·128 + k, v 2·128·64 + o 128·128 = 49,152; MLP 3·128·256 = 98,304; × 2 layers = 294,912;
    # LM head 128·1024 = 131,072  →  N = 425,984.
    assert bench.matmul_parameters(DEMO) == 425_984
    # 6·425,984 + 12 · 2 layers · 128 · T=128  =  2,555,904 + 393,216
    assert bench.model_flops_per_token(DEMO, 128) == 2_949_120
    # Llama-3.1-8B: 32 · (2·4096² + 2·4096·1024 + 3·4096·14336) + 4096·128,256 = 6,979,321,856 + 525,336,576
    shape = json.loads((SCRIPT.parents[1] / "resources" / "model_configs" / "llama-3.1-8b.json").read_text())
    assert bench.matmul_parameters(shape) == 7_504_658_432
    assert bench.model_flops_per_token(shape, 2048) == 6 * 7_504_658_432 + 12 * 32 * 4096 * 2048
    # An explicit head_dim wider than hidden/heads: q and o are 128·256 each, k and v 128·128 each.
    wide = {**DEMO, "head_dim": 64}
    assert bench.matmul_parameters(wide) == 2 * (2 * 32_768 + 2 * 16_384 + 98_304) + 131_072
    assert bench.model_flops_per_token(wide, 10) == 6 * bench.matmul_parameters(wide) + 12 * 2 * 256 * 10


def test_mfu_against_the_peak_table(bench):
    peak, source = bench.peak_bf16_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989.5e12 and "SXM" in source
    # 48,249,176,064 FLOPs per token × 1,000 tokens/s ÷ 989.5 TFLOPS
    assert bench.mfu(48_249_176_064, 1000.0, peak) == pytest.approx(0.0487612, rel=1e-5)
    assert bench.mfu(2_949_120, 0.0, peak) is None
    assert bench.mfu(2_949_120, 100.0, None) is None
    expected = {
        "NVIDIA H100 PCIe": 756.5e12, "NVIDIA H100 NVL": 835.5e12, "NVIDIA H200": 989.5e12,
        "NVIDIA H200 NVL": 835.5e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12,
        "NVIDIA L4": 121e12, "NVIDIA A10": 125e12, "NVIDIA GeForce RTX 4090": 165.2e12,
        "NVIDIA GeForce RTX 4060": 30.2e12,
    }
    for name, flops in expected.items():
        assert bench.peak_bf16_flops(name)[0] == flops, name
    for unknown in ("NVIDIA GeForce RTX 4060 Ti", "NVIDIA A10G", "NVIDIA L40S", "Tesla T4", None, ""):
        assert bench.peak_bf16_flops(unknown) is None, unknown


def test_cap_fraction_by_hand(bench):
    # (8 GiB − 0.5 GiB context) of an 80 GiB card = 7.5 / 80
    assert bench.cap_fraction(8 * GIB, 512 * MIB, 80 * GIB) == 0.09375
    assert bench.cap_fraction(8 * GIB, 512 * MIB, 8 * GIB) == 0.9375
    assert bench.cap_fraction(8 * GIB, 0, 16 * GIB) == 0.5
    with pytest.raises(ValueError, match="leaves nothing"):
        bench.cap_fraction(8 * GIB, 8 * GIB, 80 * GIB)
    with pytest.raises(ValueError, match="smaller than"):
        bench.cap_fraction(8 * GIB, 512 * MIB, 6 * GIB)


def test_median_tokens_per_second_skips_the_warm_up(bench):
    # After one warm-up step: 100/1, 100/2, 100/4 → median 50
    assert bench.median_tokens_per_second([100, 100, 100, 100], [10.0, 1.0, 2.0, 4.0], 1) == 50.0
    assert bench.median_tokens_per_second([100, 300], [1.0, 1.0], 0) == 200.0
    assert bench.median_tokens_per_second([100, 100], [1.0, 1.0], 2) is None


def test_probe_counts_real_tokens_padded_and_padding_free(bench):
    import torch

    padded = bench.Probe(cuda=False)
    padded.count({"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]),
                  "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])})
    assert padded.pending_tokens == 5
    free = bench.Probe(cuda=False)
    free.count({"input_ids": torch.tensor([[8, 9, 5, 6, 7]]), "position_ids": torch.tensor([[0, 1, 0, 1, 2]])})
    assert free.pending_tokens == 5
    # The same two examples, batched either way, in either order: the same digest.
    assert padded.tokens_digest() == free.tokens_digest()
    reordered = bench.Probe(cuda=False)  # [5, 6, 7] then [8, 9]
    reordered.count({"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "position_ids": torch.tensor([[0, 1, 2, 0, 1]])})
    assert reordered.tokens_digest() == free.tokens_digest()
    split = bench.Probe(cuda=False)  # [5, 6] and [7, 8, 9]: the same ids, other examples
    split.count({"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "position_ids": torch.tensor([[0, 1, 0, 1, 2]])})
    assert split.pending_tokens == 5
    assert split.tokens_digest() != free.tokens_digest()

def test_comparison_and_table_from_hand_made_rows(bench):
    common = {"seq": 2048, "batch": 1, "cap_bytes": 0, "status": "ok", "tokens_digest": "abc"}
    rows = [
        {"model": "llama-3.1-8b", "path": "plain", **common, "tokens_per_second": 1000.0, "peak_bytes": 10 * GIB},
        {"model": "llama-3.1-8b", "path": "studio", **common, "tokens_per_second": 1600.0, "peak_bytes": 5 * GIB},
        {"model": "llama-3.1-8b", "path": "studio", "seq": 2048, "batch": 1, "cap_bytes": 8 * GIB, "status": "ok",
         "steps_completed": 13, "steps_expected": 13, "tokens_per_second": 900.0, "peak_bytes": int(7.5 * GIB)},
        {"model": "llama-3.1-8b", "path": "plain", "seq": 2048, "batch": 1, "cap_bytes": 8 * GIB, "status": "oom",
         "steps_completed": 0, "steps_expected": 13},
    ]
    bench.add_mfu(rows, {"llama-3.1-8b": 48_249_176_064}, 989.5e12)
    assert rows[0]["mfu"] == round(48_249_176_064 * 1000 / 989.5e12, 4)
    assert rows[2]["mfu"] is None  # capped runs get no MFU
    [c] = bench.comparisons(rows)
    assert (c["speedup"], c["speedup_target_met"], c["vram_ratio"], c["vram_target_met"]) == (1.6, True, 0.5, True)
    assert c["same_tokens"] is True
    report = {"machine": {"python": "3.11", "gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_bytes": 80 * GIB,
                          "cuda": "12.8", "peak_bf16_tflops": 989.5, "peak_source": "datasheet",
                          "versions": {k: "1" for k in ("torch", "transformers", "trl", "peft", "bitsandbytes",
                                                        "accelerate", "liger-kernel", "flash-attn")}},
              "command": "python benchmarks/gpu_speed.py", "rows": rows, "comparisons": [c],
              "settings": {"seq": 2048, "batch": 1, "rank": 16, "warmup": 3, "steps": 10, "optim": "paged_adamw_8bit"}}
    table = bench.markdown(report)
    assert ("| llama-3.1-8b | 1,000 | 1,600 | 1.60× ✓ | 10.00 | 5.00 | 0.50× ✓ | 4.9% | 7.8% | yes |"
            in table), table
    assert "| llama-3.1-8b | studio | 8 | trained | 13/13 | 900 | 7.50 |" in table
    assert "| llama-3.1-8b | plain | 8 | out of memory | 0/13 | — | — |" in table
    slower = bench.comparisons([{**rows[0]}, {**rows[1], "tokens_per_second": 1400.0, "peak_bytes": 7 * GIB}])[0]
    assert (slower["speedup"], slower["speedup_target_met"], slower["vram_ratio"], slower["vram_target_met"]) == (
        1.4, False, 0.7, False)


def test_dry_run_lists_the_cases(tmp_path):
    out = tmp_path / "dry.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "6 cases" in done.stdout
    assert "| llama-3.1-8b studio seq2048 b1 cap 8 GiB | 7,504,658,432 | 48,249,176,064 |" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["path"], r["cap_bytes"]) for r in rows] == [
        ("llama-3.2-3b", "plain", 0), ("llama-3.2-3b", "studio", 0), ("llama-3.1-8b", "plain", 0),
        ("llama-3.1-8b", "studio", 0), ("llama-3.1-8b", "studio", 8 * GIB), ("llama-3.1-8b", "plain", 8 * GIB)]
