"""The doctor: what will go wrong on this machine before the first run, each finding with the one step that fixes it.

Two halves. `gather_facts` reads the machine (NVML through `gpu.detect_gpu`, the same reading the Config tab plans
with; torch's build; a real 4-bit matmul in bitsandbytes; RAM and disks; the tools exports use; the installed
versions), which is slow (it imports torch) and runs off the GUI thread. `run_checks` turns facts into findings and
is pure, so every branch is tested with faked facts. What a chosen model and run need (`Needs`) is computed above
this package (the doctor session, the CLI) and handed in as plain numbers.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.core.system.gpu import GpuInfo, detect_gpu, driver_version
from studio.core.system.paths import hf_cache_dir, resource_path, runs_dir
from studio.core.system.torch_build import choose_torch, driver_needed, driver_satisfies, install_command
from studio.core.system.units import format_bytes

__all__ = ["FAIL", "OK", "WARN", "Check", "Disk", "Facts", "Needs", "TorchFacts", "gather_facts", "redact",
           "run_checks", "worst"]

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}
CONSTRAINTS_NAME = "ci-constraints.txt"


@dataclass(frozen=True)
class Check:
    """One finding: `level` ok/warn/fail, `found` what was seen, `fix` the one step that mends a warn or fail."""

    key: str
    title: str
    level: str
    found: str
    fix: str = ""


@dataclass(frozen=True)
class TorchFacts:
    """torch as installed: `version` None when it does not import (`error` says why)."""

    version: str | None
    cuda: str | None = None  # torch.version.cuda: "12.8", None for a CPU or ROCm build
    hip: str | None = None  # torch.version.hip: a ROCm build
    cuda_available: bool = False
    mps_available: bool = False
    error: str = ""


@dataclass(frozen=True)
class Disk:
    label: str  # "the Hugging Face cache", "the runs folder"
    path: str
    free_bytes: int | None


@dataclass(frozen=True)
class Needs:
    """What the chosen model and run need, from the config (computed by the caller): None where unknown."""

    model: str = ""
    vram_bytes: int | None = None  # the run's memory estimate, on the card (or RAM without one)
    download_bytes: int | None = 0  # weights not yet in the HF cache
    run_bytes: int | None = None  # checkpoints and the adapter in the runs folder


@dataclass(frozen=True)
class Facts:
    """Everything the checks read, gathered once; tests build it by hand."""

    os_name: str  # linux, windows, darwin
    machine: str  # x86_64, arm64, ...
    cpu: str
    gpu: GpuInfo | None  # NVML's first card (gpu.detect_gpu)
    driver: str | None  # the NVIDIA driver, from NVML or nvidia-smi
    torch: TorchFacts
    ram_total_bytes: int
    ram_available_bytes: int
    disks: tuple[Disk, ...] = ()
    bitsandbytes: str | None = None  # bitsandbytes' version; None when it does not import
    bitsandbytes_error: str = ""  # why the 4-bit matmul failed or gave wrong numbers; "" when right
    display: str | None = None  # why Qt cannot open a window (studio.ui.display_check); None when it can
    # The export tools, found the way the exports find them (export.quantize.find_quantizer,
    # export.ollama_server.find_ollama; the doctor session fills these in), with the exports' own install hints.
    quantizer: str | None = None
    ollama: str | None = None
    quantizer_hint: str = ""
    ollama_hint: str = ""
    versions: Mapping[str, str | None] = field(default_factory=dict)  # installed version of each tested package
    tested: Mapping[str, str] = field(default_factory=dict)  # the version CI tests (ci-constraints.txt)
    python: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------- checks


def _torch_check(f: Facts) -> Check:
    t = f.torch
    build = choose_torch(f.os_name, f.machine, f.driver)
    title = "torch's build"
    if t.version is None:
        return Check("torch", title, FAIL, f"torch does not import: {t.error}",
                     _install_fix(build, f.tested.get("torch", "2.13.0"), f.os_name))
    base = t.version.split("+")[0]
    card = f.gpu.name if f.gpu is not None else None
    if t.hip:
        level = OK if t.cuda_available else WARN
        found = f"torch {t.version}, a ROCm {t.hip} build (AMD)"
        return Check("torch", title, level, found + ("" if t.cuda_available else ": it sees no AMD GPU"),
                     "" if t.cuda_available else "check that ROCm sees the card: rocminfo")
    if f.os_name == "darwin":
        if not build.supported:
            return Check("torch", title, FAIL, f"torch {t.version} on {build.why}",
                         "train on a Linux or Windows machine with an NVIDIA card, or an Apple silicon Mac")
        return Check("torch", title, OK if t.mps_available else WARN,
                     f"torch {t.version}, {'MPS available' if t.mps_available else 'no MPS'}: {build.why}",
                     "" if t.mps_available else "update macOS to 12.3 or newer for MPS")
    if card is not None and not t.cuda:
        # The silent trap: Windows' default `pip install torch` (and a CPU wheel on Linux) on a machine with a card.
        return Check("torch", title, WARN,
                     f"{card} is here, but torch {t.version} is a CPU-only build: training would run on the CPU, "
                     f"many times slower", _install_fix(build, base, f.os_name))
    if t.cuda:
        if f.driver and not driver_satisfies(f.driver, t.cuda, f.os_name):
            needed = driver_needed(t.cuda, f.os_name)
            return Check("torch", title, FAIL,
                         f"torch {t.version} is built with CUDA {t.cuda}, which needs NVIDIA driver {needed} or "
                         f"newer; this machine has {f.driver}",
                         f"update the NVIDIA driver to {needed} or newer (or install the build for it: "
                         f"{_install_fix(build, base, f.os_name)})")
        if not t.cuda_available:
            found = (f"torch {t.version} (CUDA {t.cuda}) finds no usable GPU"
                     + (f" although NVML sees {card}" if card else "; no NVIDIA card or driver is seen"))
            fix = ("install the NVIDIA driver for your card (nvidia-smi should list it), then restart" if card is None
                   else "restart the computer after a driver update; check that nvidia-smi lists the card")
            return Check("torch", title, WARN, found, fix)
        return Check("torch", title, OK, f"torch {t.version}, CUDA {t.cuda}, on {card or 'the GPU'}"
                     + (f" (driver {f.driver})" if f.driver else ""))
    return Check("torch", title, OK, f"torch {t.version}, a CPU build on {f.cpu}: no NVIDIA card here, so runs "
                                     "train on the CPU (the demo model; real models need an NVIDIA card)")


def _install_fix(build, version: str, os_name: str) -> str:
    """The install command for the environment the studio runs in (its own Python, not whichever is on PATH)."""
    python = f'"{sys.executable}"' if " " in sys.executable else sys.executable
    command = install_command(build, version, python=python)
    # Windows keeps torch's DLLs locked while the studio runs.
    return f"close the studio, then: {command}" if os_name == "windows" else command


def _bitsandbytes_check(f: Facts) -> Check:
    title = "bitsandbytes (4-bit QLoRA)"
    if f.bitsandbytes is None:
        return Check("bitsandbytes", title, WARN, "bitsandbytes does not import: QLoRA (4-bit) runs are refused",
                     f"{sys.executable} -m pip install bitsandbytes")
    device = "the GPU" if f.torch.cuda_available else "the CPU"
    if f.bitsandbytes_error:
        return Check("bitsandbytes", title, WARN if not f.torch.cuda_available else FAIL,
                     f"bitsandbytes {f.bitsandbytes}: a 4-bit matmul on {device} failed: {f.bitsandbytes_error}",
                     f"{sys.executable} -m pip install --force-reinstall bitsandbytes")
    return Check("bitsandbytes", title, OK,
                 f"bitsandbytes {f.bitsandbytes}: a 4-bit (NF4) matmul on {device} gives the right numbers")


def _memory_checks(f: Facts, needs: Needs) -> list[Check]:
    checks = []
    on_card = f.gpu is not None and f.torch.cuda_available
    free = f.gpu.free_bytes if on_card and f.gpu is not None else f.ram_available_bytes
    where = (f"{f.gpu.name}: {format_bytes(f.gpu.free_bytes, style='memory')} free of "
             f"{format_bytes(f.gpu.total_bytes, style='memory')}" if on_card and f.gpu is not None else
             f"RAM: {format_bytes(f.ram_available_bytes, style='memory')} free of "
             f"{format_bytes(f.ram_total_bytes, style='memory')}")
    if needs.vram_bytes is not None and needs.vram_bytes > free:
        checks.append(Check("memory", "memory", WARN,
                            f"{where}; {needs.model} needs about {format_bytes(needs.vram_bytes, style='estimate')}",
                            "Config tab → Fit to this GPU (or `finetune-studio estimate CONFIG`), or a smaller model"))
    else:
        need = (f"; {needs.model} needs about {format_bytes(needs.vram_bytes, style='estimate')}"
                if needs.vram_bytes is not None else "")
        checks.append(Check("memory", "memory", OK, where + need))
    wanted = {"the Hugging Face cache": needs.download_bytes, "the runs folder": needs.run_bytes}
    for disk in f.disks:
        want = wanted.get(disk.label)
        if disk.free_bytes is None:
            checks.append(Check("disk", f"disk under {disk.label}", WARN, f"{disk.path}: cannot be read",
                                f"create {disk.path} or make it writable"))
            continue
        found = f"{disk.path}: {format_bytes(disk.free_bytes, style='memory')} free"
        if want and want > disk.free_bytes:
            checks.append(Check("disk", f"disk under {disk.label}", FAIL,
                                f"{found}; {needs.model or 'the run'} needs {format_bytes(want, style='memory')} there",
                                f"free {format_bytes(want - disk.free_bytes, style='memory')} on that disk, or move "
                                + ("it with HF_HOME=/a/bigger/disk" if "cache" in disk.label
                                   else "runs with FINETUNE_STUDIO_RUNS=/a/bigger/disk")))
        else:
            checks.append(Check("disk", f"disk under {disk.label}", OK,
                                found + (f" ({format_bytes(want, style='memory')} needed)" if want else "")))
    return checks


def _window_check(f: Facts) -> Check:
    if f.display:
        return Check("window", "the window (Qt)", WARN, f.display.split(" — ")[0],
                     f.display.split(" — ", 1)[1] if " — " in f.display else "")
    return Check("window", "the window (Qt)", OK, "Qt's platform plugin and its system libraries are in place")


def _export_checks(f: Facts) -> list[Check]:
    quantizer_fix = f.quantizer_hint or 'pip install "finetune-studio[llama-cpp]" (or ./install.sh --with-llama-cpp)'
    return [
        Check("quantizer", "llama.cpp's quantizer (K-quant GGUF)", OK if f.quantizer else WARN,
              f"found: {f.quantizer}" if f.quantizer else "not found: GGUF exports are f16, bf16, q8_0 and the "
                                                          "legacy q5_1 and q4_0 only",
              "" if f.quantizer else quantizer_fix),
        Check("ollama", "Ollama", OK if f.ollama else WARN,
              f"found: {f.ollama}" if f.ollama else "not found: exports write a Modelfile, but cannot load it into "
                                                    "Ollama here",
              "" if f.ollama else (f.ollama_hint or "install Ollama from https://ollama.com/download")),
    ]


def _versions_check(f: Facts) -> Check:
    off = []
    for name, tested in f.tested.items():
        installed = f.versions.get(name)
        if installed is None:
            off.append(f"{name} missing (CI tests {tested})")
        elif installed.split("+")[0] != tested:
            off.append(f"{name} {installed} (CI tests {tested})")
    if not off:
        return Check("versions", "versions of the stack", OK, f"the versions CI tests ({len(f.tested)} packages)")
    return Check("versions", "versions of the stack", WARN, "; ".join(off),
                 f'{sys.executable} -m pip install -c "{_constraints_path()}" '
                 + " ".join(f"{n}=={f.tested[n]}" for n in f.tested if n != "torch"
                            and (f.versions.get(n) or "").split("+")[0] != f.tested[n]))


def run_checks(facts: Facts, needs: Needs = Needs()) -> list[Check]:
    """Every finding, in the order the user should read them."""
    return [_torch_check(facts), _bitsandbytes_check(facts), *_memory_checks(facts, needs), _window_check(facts),
            *_export_checks(facts), _versions_check(facts)]


def worst(checks: Sequence[Check]) -> str:
    return max((c.level for c in checks), key=_RANK.__getitem__, default=OK)


# ----------------------------------------------------------------------------------------- the machine's facts


def _constraints_path() -> Path:
    return resource_path(CONSTRAINTS_NAME)


def tested_versions(path: Path | None = None) -> dict[str, str]:
    """name -> version from the constraints file CI installs with."""
    tested = {}
    for line in (path or _constraints_path()).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            tested[name.strip()] = version.strip()
    return tested


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "an unknown CPU"


def _smi_driver() -> str | None:
    """The driver version nvidia-smi reports, where NVML's library cannot be loaded from Python."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else None


def _torch_facts() -> TorchFacts:
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - a broken install raises anything (OSError for a missing DLL)
        return TorchFacts(None, error=f"{type(error).__name__}: {error}")
    mps = getattr(torch.backends, "mps", None)
    return TorchFacts(torch.__version__, torch.version.cuda, getattr(torch.version, "hip", None),
                      bool(torch.cuda.is_available()), bool(mps is not None and mps.is_available()))


def probe_bitsandbytes(on_gpu: bool) -> str:
    """A tiny real NF4 matmul, checked twice: against the same product in float of the dequantized weights (the
    kernel's own numbers) and of the original weights (the quantization's error stays NF4's). "" when right."""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf
        import torch

        device = "cuda" if on_gpu else "cpu"
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(64, 128, generator=generator).to(device, torch.bfloat16)
        x = torch.randn(8, 128, generator=generator).to(device, torch.bfloat16)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4", blocksize=64)
        y = bnb.matmul_4bit(x, packed.t(), quant_state=state).float()
        dequantized = x.float() @ bnbf.dequantize_4bit(packed, state).float().t()
        exact = x.float() @ weight.float().t()
    except Exception as error:  # noqa: BLE001 - a kernel that does not load raises RuntimeError, OSError, ...
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
    kernel_error = float((y - dequantized).norm() / dequantized.norm())
    quant_error = float((dequantized - exact).norm() / exact.norm())
    if kernel_error > 0.02 or quant_error > 0.2:
        return (f"wrong numbers: {kernel_error:.1%} from the dequantized product, {quant_error:.1%} from the "
                "16-bit one")
    return ""


def _free_bytes(path: Path) -> int | None:
    # The folder may not exist yet (a first launch): its nearest existing parent is on the same disk.
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _ram() -> tuple[int, int]:
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except ImportError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gather_facts(*, display: str | None = None, progress: Callable[[str], None] = lambda _: None) -> Facts:
    """This machine's facts (seconds: imports torch and runs the 4-bit matmul). `display` is the window's own check
    (studio.ui.display_check.display_problem), handed in by the caller since core knows nothing of Qt; the export
    tools are looked up above this package (sessions.doctor), where the exports' own lookups can be used."""
    os_name = {"win32": "windows", "darwin": "darwin"}.get(sys.platform, "linux")
    progress("reading the GPU")
    gpu = detect_gpu()
    driver = driver_version() or _smi_driver()
    progress("reading torch")
    torch = _torch_facts()
    progress("a 4-bit matmul in bitsandbytes")
    bnb = _installed("bitsandbytes")
    bnb_error = probe_bitsandbytes(torch.cuda_available and torch.cuda is not None) if bnb and torch.version else ""
    total, available = _ram()
    disks = tuple(Disk(label, str(path), _free_bytes(path))
                  for label, path in (("the Hugging Face cache", hf_cache_dir()), ("the runs folder", runs_dir())))
    tested = tested_versions()
    return Facts(os_name=os_name, machine=platform.machine(), cpu=_cpu_name(), gpu=gpu, driver=driver, torch=torch,
                 ram_total_bytes=total, ram_available_bytes=available, disks=disks, bitsandbytes=bnb,
                 bitsandbytes_error=bnb_error, display=display,
                 versions={name: _installed(name) for name in tested}, tested=tested,
                 python=platform.python_version())


# ------------------------------------------------------------------------------------------- the report


def redact(text: str, *, home: str | None = None) -> str:
    """`text` with the user's home as ~, the user name in every other path replaced (C:\\Users\\<user>,
    /home/<user>, /media/<user>, /run/media/<user>, /Users/<user>; whoever's it is, so another account's path
    does not leak a name either), and anything shaped like a Hugging Face token removed."""
    home = home if home is not None else str(Path.home())
    text = re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_<token>", text)
    if home and home not in ("/", ""):
        text = text.replace(home, "~")
    text = re.sub(r"(?i)(\b[A-Z]:\\Users\\)[^\\\s:;\"']+", r"\1<user>", text)
    return re.sub(r"((?:^|[\s\"'(=:])/(?:home|media|run/media|Users)/)[^/\s:;\"']+", r"\1<user>", text)
