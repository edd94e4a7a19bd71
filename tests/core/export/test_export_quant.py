"""K-quant GGUF through llama.cpp's own quantizer, chosen by the card, verified per quant (issue 23).

The test model (benchmarks/gguf_quants.py's builders) has hidden and MLP sizes that are multiples of 256, so llama.cpp's
K-quant blocks fit every matrix; the demo's 128-wide model is the one that falls back. llama-cpp-python is installed in
this environment (the `llama-cpp` extra, .ci/run): these tests run llama.cpp, in its child process, and never skip.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from studio.core.export.gguf import export_gguf, write_gguf
from studio.core.export.quantize import QuantizerMissing, read_tensor_types
from studio.core.plan.gguf_fit import (
    Budget, choose_gguf_type, compute_buffer_bytes, gguf_tensor_types, kv_cache_bytes, weights_bytes,
)
from studio.core.plan.vram import GIB, MIB, ModelShape

ROOT = Path(__file__).resolve().parents[3]


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


def test_the_k_quants_answer_in_llama_cpp_and_agree_with_the_trained_model(kquant_run, kquant_exports):
    from studio.core.export.jobs import verify_export

    for gguf_type, exported in kquant_exports.items():
        check = verify_export(kquant_run, exported.path, max_new_tokens=60)
        assert check.status == "completed" and check.engine.startswith("llama.cpp")
        assert all(case.export.strip() for case in check.cases), "llama.cpp answers every case"
        assert check.type_label == gguf_type.upper()
        assert check.task_studio == 10, "the trained model: every call right, no call where none is due"
        assert check.passes, check.headline()
        for case in check.differing:
            assert re.fullmatch(r"case \d+ differs from token \d+: `.*` → `.*`", case.first_difference(), re.S)
        assert check.headline().startswith(f"{gguf_type.upper()}: {check.identical}/10 replies identical")


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


def _without_llama_cpp(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import llama_cpp (a sitecustomize that hides it) and finds no
    llama-quantize: what a user without the `llama-cpp` extra has."""
    import os

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['llama_cpp'] = None\n")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "llama-quantize").exists())
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)]), "PATH": path}


def test_cli_k_quant_without_llama_cpp_exits_2_naming_what_to_install(demo_assets, tmp_path, run_studio):
    output = tmp_path / "out" / "demo.gguf"
    result = run_studio("export", "gguf", demo_assets.model_dir, "--output", output, "--type", "q4_k_m",
                        env=_without_llama_cpp(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "q4_k_m needs llama.cpp's quantizer, which is not installed" in line
    assert 'pip install "finetune-studio[llama-cpp]"' in line and "llama-quantize" in line
    assert not output.exists() and not output.parent.exists() or not any(output.parent.iterdir())


def test_cli_auto_is_the_default_sizes_for_the_machine_and_the_modelfile_sets_num_ctx(demo_assets, tmp_path,
                                                                                      run_studio):
    output = tmp_path / "out" / "demo.gguf"
    result = run_studio("export", "gguf", demo_assets.model_dir, "--output", output, "--context", "3072")
    assert result.returncode == 0, result.stderr[-2000:]
    type_line = next(line for line in result.stderr.splitlines() if "] Type: " in line)
    assert "is the best-quality type that fits" in type_line and "3072-token context" in type_line
    assert "PARAMETER num_ctx 3072" in (tmp_path / "out" / "demo.Modelfile").read_text(encoding="utf-8")
    assert read_tensor_types(output).file_type == "MOSTLY_F16", "the demo is tiny: f16 fits anything"


def test_a_llama_quantize_program_on_path_is_used_when_llama_cpp_python_is_not_installed(demo_assets, tmp_path,
                                                                                         run_studio):
    """The second source of the quantizer: a `llama-quantize` program (here a stand-in that runs llama.cpp's
    quantizer through the llama-cpp-python of this environment, with llama-quantize's arguments)."""
    import os
    import stat

    env = _without_llama_cpp(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "llama-quantize"
    program.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'called'}\n"
                       f"PYTHONPATH={ROOT} exec {sys.executable} -m studio.core.eval.llama_child quantize \"$1\" "
                       "\"$2\" \"$(echo $3 | tr A-Z a-z)\" \"$4\"\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    output = tmp_path / "out" / "demo-q5_k_m.gguf"
    result = run_studio("export", "gguf", demo_assets.model_dir, "--output", output, "--type", "q5_k_m", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"with {program}" in result.stderr, "the progress names the quantizer"
    assert (tmp_path / "called").read_text().split()[2] == "Q5_K_M"
    assert read_tensor_types(output).file_type == "MOSTLY_Q5_K_M"
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "demo-q5_k_m.Modelfile", "demo-q5_k_m.finetune_studio.json", "demo-q5_k_m.gguf", "demo-q5_k_m.md"], \
        "the f16 file quantized from and llama.cpp's log are not left behind"


def test_cli_refuses_a_context_shorter_than_llama_cpps_smallest(demo_assets, tmp_path, run_studio):
    result = run_studio("export", "gguf", demo_assets.model_dir, "--output", tmp_path / "x.gguf", "--context", "100")
    assert result.returncode == 2 and "context 100: at least 256 tokens" in result.stderr.strip().splitlines()[-1]
