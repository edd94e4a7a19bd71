"""K-quant GGUF through llama.cpp's own quantizer, chosen by the card, verified per quant (issue 23).

The test model (benchmarks/gguf_quants.py's builders) has hidden and MLP sizes that are multiples of 256, so llama.cpp's
K-quant blocks fit every matrix; the demo's 128-wide model is the one that falls back. llama-cpp-python is installed in
this environment (the `llama-cpp` extra, .ci/run): these tests run llama.cpp, in its child process, and never skip.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


from studio.core.export.quantize import read_tensor_types
from export_quant_shared import _bench, kquant_exports, kquant_run  # noqa: F401  (shared with the other half)

ROOT = Path(__file__).resolve().parents[2]








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


def test_a_llama_quantize_chosen_once_is_remembered_for_the_next_exports(demo_assets, tmp_path, run_studio):
    """`--llama-quantize PROGRAM` (the Export dialog's *Use llama-quantize…*) is set once: the next export, with no
    flag, no PATH entry and no environment variable, makes its K-quant with the same program."""
    import stat

    env = _without_llama_cpp(tmp_path)
    env["FINETUNE_STUDIO_HOME"] = str(tmp_path / "home")
    program = tmp_path / "tools" / "llama-quantize"
    program.parent.mkdir()
    program.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'called'}\n"
                       f"PYTHONPATH={ROOT} exec {sys.executable} -m studio.core.eval.llama_child quantize \"$1\" "
                       "\"$2\" \"$(echo $3 | tr A-Z a-z)\" \"$4\"\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    not_a_program = tmp_path / "notes.txt"
    not_a_program.write_text("not a program")

    refused = run_studio("export", "gguf", demo_assets.model_dir, "--output", tmp_path / "a" / "x.gguf", "--type",
                         "q4_k_m", "--llama-quantize", not_a_program, env=env)
    first = run_studio("export", "gguf", demo_assets.model_dir, "--output", tmp_path / "a" / "first.gguf", "--type",
                       "q4_k_m", "--llama-quantize", program, env=env)
    later = run_studio("export", "gguf", demo_assets.model_dir, "--output", tmp_path / "b" / "later.gguf", "--type",
                       "q6_k", env=env)

    assert refused.returncode == 2 and "--llama-quantize" in refused.stderr and "not a program" in refused.stderr
    assert not (tmp_path / "a" / "x.gguf").exists()
    assert first.returncode == 0 and later.returncode == 0, later.stderr[-2000:]
    assert [line.split()[2] for line in (tmp_path / "called").read_text().splitlines()] == ["Q4_K_M", "Q6_K"]
    assert f"llama_quantize = \"{program}\"" in (tmp_path / "home" / "tools.toml").read_text()
