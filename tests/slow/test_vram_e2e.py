"""The VRAM estimate: every term against a hand computation, the verdict, and `finetune-studio estimate`."""

from __future__ import annotations
from vram_shared import LLAMA_8B_TOML  # noqa: F401  (shared with the other half)





# ------------------------------------------------------------------ the command line




def test_estimate_command_rejects_bad_input_with_exit_2(tmp_path, run_studio):
    config = tmp_path / "run.toml"
    config.write_text(LLAMA_8B_TOML.replace("llama-3.1-8b", "no-such/model"), encoding="utf-8")
    result = run_studio("estimate", config, timeout=120)
    assert result.returncode == 2
    assert "no-such/model" in result.stderr and "cache" in result.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text(LLAMA_8B_TOML.replace("r = 16", "r = 0"), encoding="utf-8")
    result = run_studio("estimate", bad, timeout=120)
    assert result.returncode == 2 and "lora.r = 0" in result.stderr

    result = run_studio("estimate", config, "--model", "llama-3.2-1b", "--gpu-memory", "lots", timeout=120)
    assert result.returncode == 2 and "--gpu-memory" in result.stderr
