"""K-quant GGUF files (Q4_K_M, Q5_K_M, Q6_K) made by llama.cpp's own quantizer from the studio's f16 GGUF.

The `gguf` package writes q8_0 and the legacy Q4_0/Q5_1 types but no K-quant; llama.cpp's quantizer also chooses
a type per tensor (more bits where they matter, a fallback where a tensor's rows do not hold whole 256-value
blocks), so the file is the one a user of llama.cpp or Ollama would make. It comes from, in this order:
- llama-cpp-python (the `llama-cpp` extra): its `llama_model_quantize`, called in a child process
  (eval.llama_child), like every other use of llama.cpp, so a crash in native code never ends the window;
- a `llama-quantize` program: the one FINETUNE_STUDIO_LLAMA_QUANTIZE names, else the one on PATH.
Neither → QuantizerMissing, naming what to install on this operating system (the legacy types stay offered).

After quantizing, the file is read back with gguf's reader: its `general.file_type` must be the type asked for,
and the type each tensor got is reported, fallbacks named.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from studio.core.system.tasks import NO_TASK, TaskState
from studio.core.eval import llama_child
from studio.core.export.staging import ExportCancelled, ExportError
from studio.core.plan.gguf_fit import GGUF_TYPE_INFO, K_FALLBACK

K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")
QUANTIZE_ENV = "FINETUNE_STUDIO_LLAMA_QUANTIZE"
"""The path of a `llama-quantize` program to use when llama-cpp-python is not installed (set once, e.g. in the
shell profile; the program from a llama.cpp release or `brew install llama.cpp`)."""
LLAMA_CPP_PYTHON = "llama-cpp-python"


class QuantizerMissing(ExportError):
    """A K-quant asked for where no llama.cpp quantizer is installed."""


@dataclass(frozen=True)
class Quantizer:
    how: str
    """LLAMA_CPP_PYTHON or "llama-quantize"."""
    program: Path | None = None

    def describe(self) -> str:
        return "llama.cpp's quantizer (llama-cpp-python)" if self.program is None else f"{self.program}"


def llama_cpp_installed() -> bool:
    """llama-cpp-python importable, without importing it (its native library loads in the child only)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules: hidden on purpose
        return False


def find_quantizer() -> Quantizer | None:
    """llama-cpp-python where installed; else the program in FINETUNE_STUDIO_LLAMA_QUANTIZE, the one chosen once in
    the settings (system.tools), or `llama-quantize` on PATH."""
    from studio.core.system.tools import LLAMA_QUANTIZE, remembered_tool

    if llama_cpp_installed():
        return Quantizer(LLAMA_CPP_PYTHON)
    named = os.environ.get(QUANTIZE_ENV, "").strip()
    program = shutil.which(named) if named else (remembered_tool(LLAMA_QUANTIZE) or shutil.which("llama-quantize"))
    return Quantizer("llama-quantize", Path(program)) if program else None


def install_hint(platform: str | None = None) -> str:
    """What to install for K-quants on this operating system."""
    platform = platform or sys.platform
    extra = 'pip install "finetune-studio[llama-cpp]"'
    if platform.startswith("win"):
        return (f"{extra} (it compiles llama.cpp: install Visual Studio Build Tools with \"Desktop development with "
                "C++\" first, or take a prebuilt wheel: pip install llama-cpp-python --extra-index-url "
                "https://abetlen.github.io/llama-cpp-python/whl/cpu), or put llama-quantize.exe from a llama.cpp "
                f"release (github.com/ggml-org/llama.cpp/releases) on PATH or in {QUANTIZE_ENV}")
    if platform == "darwin":
        return (f"{extra} (it compiles llama.cpp: needs the Xcode command line tools, xcode-select --install), or "
                f"brew install llama.cpp, which puts llama-quantize on PATH")
    return (f"{extra} (it compiles llama.cpp, a few minutes: needs a C++ compiler and cmake, e.g. sudo apt install "
            f"build-essential cmake), or put llama.cpp's llama-quantize on PATH or in {QUANTIZE_ENV}")


def require_quantizer(gguf_type: str) -> Quantizer | None:
    """The quantizer a type needs (None for the types the studio writes itself); QuantizerMissing otherwise."""
    if not GGUF_TYPE_INFO[gguf_type].needs_llama_cpp:
        return None
    quantizer = find_quantizer()
    if quantizer is None:
        raise QuantizerMissing(f"GGUF type {gguf_type} needs llama.cpp's quantizer, which is not installed: "
                               f"{install_hint()}. Without it the studio writes f16, bf16, q8_0 and the legacy "
                               "q5_1 and q4_0")
    return quantizer


def quantize_gguf(source: Path, output: Path, gguf_type: str, *, log: Path, quantizer: Quantizer,
                  task: TaskState = NO_TASK) -> None:
    """Quantize the f16 GGUF `source` into `output` with llama.cpp's quantizer in a child process; llama.cpp's own
    words (a line per tensor) go to `log`. ExportError naming the log if it fails, ExportCancelled on cancel."""
    threads = max(1, (os.cpu_count() or 2))
    if quantizer.program is None:
        command = [sys.executable, "-m", llama_child.__name__, "quantize", str(source), str(output), gguf_type,
                   str(threads)]
    else:
        command = [str(quantizer.program), str(source), str(output), gguf_type.upper(), str(threads)]
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            while child.poll() is None:
                if task.cancelled():
                    raise ExportCancelled()
                time.sleep(0.05)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if child.returncode != 0:
        words = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if child.returncode == llama_child.NO_LLAMA_CPP:
            raise QuantizerMissing(f"GGUF type {gguf_type}: llama_cpp cannot be imported ({words[-1] if words else ''}"
                                   f"): {install_hint()}")
        last = words[-1].strip() if words else "no output"
        raise ExportError(f"llama.cpp's quantizer failed making {gguf_type} ({_exit_words(child.returncode)}): {last}")


def _exit_words(returncode: int) -> str:
    from studio.core.eval.verify import describe_exit

    return describe_exit(returncode)


@dataclass
class TensorTypes:
    """What a GGUF file holds, read back with gguf's reader."""

    file_type: str
    """general.file_type as llama.cpp names it: "MOSTLY_Q4_K_M"."""
    types: dict[str, str]
    """tensor name → type ("Q4_K")."""
    fallbacks: list[str]
    """"blk.0.attn_q.weight: Q5_0 (rows of 128 values, not a multiple of 256)" for each K-quant fallback."""

    def summary(self) -> str:
        """"Q4_K ×10, Q6_K ×4, F32 ×5"."""
        return ", ".join(f"{kind} ×{count}" for kind, count in Counter(self.types.values()).most_common())


def read_tensor_types(path: Path, gguf_type: str | None = None) -> TensorTypes:
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    file_type = gguf.LlamaFileType(int(field.parts[-1][0])).name if field is not None else "?"
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    fallbacks = []
    wanted_main = GGUF_TYPE_INFO[gguf_type].main if gguf_type else None
    fallback_types = set(K_FALLBACK.values()) | {"F16"}
    for tensor in reader.tensors:
        row = int(tensor.shape[0])
        if (wanted_main in K_FALLBACK and len(tensor.shape) > 1 and row % 256
                and tensor.tensor_type.name in fallback_types):
            fallbacks.append(f"{tensor.name}: {tensor.tensor_type.name} (rows of {row} values, not a multiple of "
                             "256)")
    return TensorTypes(file_type, types, fallbacks)
