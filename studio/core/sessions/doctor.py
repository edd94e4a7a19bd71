"""The doctor as the window and the CLI use it: what the chosen config needs, the findings, the banner, the report.

`examine` is the slow part (it gathers the machine's facts) and runs on a worker thread; `DoctorSession` holds the
last findings, tells observers, and decides what the start-up banner shows: a failing check, or the loud warning of
an NVIDIA card under a CPU-only torch (training would work, many times slower, and say nothing). The banner is
checked at the first launch and whenever the device changes (the card, its driver or the torch build), and a finding
that still stands is shown again from the record without running the checks.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from studio.core.config.settings import RunConfig
from studio.core.runs.store import RunDirectory, RunStore
from studio.core.system.doctor import FAIL, WARN, Check, Facts, Needs, gather_facts, redact, run_checks, worst
from studio.core.system.gpu import detect_gpu, driver_version
from studio.core.system.paths import user_data_dir
from studio.core.system.units import format_bytes

__all__ = ["DoctorReport", "DoctorSession", "banner_checks", "device_fingerprint", "diagnostics_report", "examine",
           "needs_for"]

RECORD_NAME = "doctor.json"
# The warnings the banner shows as loudly as a failure: training would run, many times slower, saying nothing.
LOUD_WARNINGS = frozenset({"torch"})
_CHECKPOINT_BYTES_PER_LORA_PARAMETER = 12  # the adapter in float32 and AdamW's two float32 moments


def needs_for(config: RunConfig | None) -> Needs:
    """What `config`'s model and run need: its memory estimate, the download of weights not yet cached (16-bit
    safetensors of its parameters), and the checkpoints the runs folder keeps. Unknown parts stay None."""
    if config is None or not config.model.name_or_path:
        return Needs()
    from studio.core.models.source import ModelSourceError, find_model_config
    from studio.core.plan.vram import ModelShape, ShapeError, estimate_vram

    model = config.model.name_or_path
    try:
        source = find_model_config(model)
        shape = ModelShape.from_config(source.config, source.name)
        estimate = estimate_vram(shape, config)
    except (ModelSourceError, ShapeError, ValueError):
        return Needs(model=model, download_bytes=None)
    settings = estimate.settings
    download = 2 * int(settings["parameters"]) if source.origin == "bundled" else 0
    kept = max(1, int(config.training.save_total_limit)) + 1  # the checkpoints kept, and the adapter
    run = _CHECKPOINT_BYTES_PER_LORA_PARAMETER * int(settings["lora_parameters"]) * kept
    return Needs(model=model, vram_bytes=int(estimate.total), download_bytes=download, run_bytes=run)


@dataclass(frozen=True)
class DoctorReport:
    facts: Facts
    checks: tuple[Check, ...]
    needs: Needs = field(default_factory=Needs)

    @property
    def level(self) -> str:
        return worst(self.checks)

    @property
    def training_gpu(self):
        """The card runs will train on, for the Config tab's presets and its fit: NVML's card only where torch can use
        it (None under a CPU-only torch, where a run trains in RAM whatever the card)."""
        return self.facts.gpu if self.facts.torch.cuda_available and not self.facts.torch.hip else None

    def to_dict(self) -> dict:
        return {"level": self.level, "checks": [c.__dict__ for c in self.checks], "facts": self.facts.to_dict(),
                "needs": self.needs.__dict__}


def examine(config: RunConfig | None = None, *, display: str | None = None,
            gather: Callable[..., Facts] | None = None, progress: Callable[[str], None] = lambda _: None
            ) -> DoctorReport:
    """Every check against this machine and `config`'s needs (seconds; run it off the GUI thread)."""
    needs = needs_for(config)
    facts = (gather or gather_machine)(display=display, progress=progress)
    return DoctorReport(facts, tuple(run_checks(facts, needs)), needs)


def gather_machine(*, display: str | None = None, progress: Callable[[str], None] = lambda _: None) -> Facts:
    """The machine's facts, with the export tools found exactly as the exports find them."""
    from studio.core.export.ollama_server import find_ollama, ollama_install_hint
    from studio.core.export.quantize import find_quantizer, install_hint

    quantizer = find_quantizer()
    return replace(gather_facts(display=display, progress=progress),
                   quantizer=quantizer.describe() if quantizer else None, quantizer_hint=install_hint(),
                   ollama=find_ollama(), ollama_hint=ollama_install_hint())


def banner_checks(checks: tuple[Check, ...] | list[Check]) -> list[Check]:
    """The findings the window shows as a banner: failures, and the loud warnings."""
    return [c for c in checks if c.level == FAIL or (c.level == WARN and c.key in LOUD_WARNINGS)]


def device_fingerprint() -> str:
    """The card, its driver and the torch build, read without importing torch (fast enough for start-up): when it
    changes, the doctor runs again."""
    from importlib.metadata import PackageNotFoundError, version

    gpu = detect_gpu()
    try:
        torch = version("torch")  # the local tag names the build: 2.13.0+cpu, 2.13.0+cu128
    except PackageNotFoundError:
        torch = "none"
    return f"{gpu.name if gpu else 'no NVIDIA GPU'} | driver {driver_version() or '-'} | torch {torch}"


class DoctorSession:
    """The window's view of the doctor: the last findings, observers told of new ones, the start-up banner."""

    def __init__(self, record: Path | None = None, fingerprint: Callable[[], str] = device_fingerprint):
        self.record_path = record or user_data_dir() / RECORD_NAME
        self._fingerprint = fingerprint
        self.report: DoctorReport | None = None
        self._listeners: list[Callable[[DoctorReport], None]] = []
        self._device = ""

    def subscribe(self, listener: Callable[[DoctorReport], None]) -> None:
        self._listeners.append(listener)

    def _read_record(self) -> dict:
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def start_up(self) -> tuple[bool, list[Check]]:
        """At launch: (whether the checks must run — a first launch, or another device), and the banner's findings
        recorded for this same device."""
        self._device = self._fingerprint()
        record = self._read_record()
        if record.get("device") != self._device:
            return True, []
        return False, [Check(**c) for c in record.get("banner", []) if isinstance(c, dict)]

    def apply(self, report: DoctorReport) -> None:
        """New findings (on the GUI thread): kept, recorded with the device they belong to, observers told."""
        self.report = report
        try:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            self.record_path.write_text(json.dumps({"device": self._device or self._fingerprint(),
                                                    "banner": [c.__dict__ for c in self.banner]}, indent=1),
                                        encoding="utf-8")
        except OSError:
            pass  # a read-only data folder: the checks run again next launch, nothing is lost
        for listener in list(self._listeners):
            listener(report)

    @property
    def banner(self) -> list[Check]:
        return banner_checks(self.report.checks) if self.report else []


def format_checks(checks: tuple[Check, ...] | list[Check]) -> str:
    """The findings as text, one block each: `[WARN] title: found` and, under it, `  fix: …`."""
    lines = []
    for check in checks:
        lines.append(f"[{check.level.upper():4}] {check.title}: {check.found}")
        if check.fix:
            lines.append(f"       fix: {check.fix}")
    return "\n".join(lines)


def _last_failure(runs: Iterable[Path] | None) -> str:
    """The newest failed run's kind and message; `runs` are the run folders newest first (the window's runs session
    holds them: no second listing of the runs folder), else the runs folder is listed (the CLI)."""
    folders = [run.path for run in RunStore().runs()] if runs is None else list(runs)
    for run in map(RunDirectory, folders):
        if run.status() != "failed":
            continue
        ending = next((e for e in reversed(run.events()) if e.get("event") == "failed"), {})
        kind = ending.get("kind") or "unknown"
        message = str(ending.get("message") or ending.get("error") or "the process ended without a word")
        # A run's message may quote its data file: the name is the user's, never useful in a bug report.
        return f"the last failed run: kind {kind}: {_without_data_names(message.splitlines()[0])}"
    return "no failed run"


def diagnostics_report(report: DoctorReport, *, runs: Iterable[Path] | None = None, home: str | None = None) -> str:
    """The text to paste into a bug report: the findings, versions, OS, card and driver, and the last failed run's
    kind and message; the home folder and the user's name replaced in every path, no token, no data file's name."""
    from studio import __version__

    f = report.facts
    gpu = (f"{f.gpu.name}, {format_bytes(f.gpu.total_bytes, style='memory')}, compute capability "
           f"{'.'.join(map(str, f.gpu.compute_capability or ())) or '?'}" if f.gpu else "no NVIDIA GPU seen by NVML")
    torch = (f"{f.torch.version} (CUDA {f.torch.cuda or '-'}, ROCm {f.torch.hip or '-'}, GPU usable: "
             f"{'yes' if f.torch.cuda_available else 'no'})" if f.torch.version else f"not importable: {f.torch.error}")
    versions = ", ".join(f"{name} {installed or 'missing'}" for name, installed in f.versions.items())
    lines = [
        f"Finetune Studio {__version__} — diagnostics (finetune-studio doctor --report)",
        f"OS: {platform.platform()} ({f.os_name}, {f.machine}); Python {f.python or platform.python_version()}",
        f"CPU: {f.cpu}; RAM {format_bytes(f.ram_total_bytes, style='memory')}",
        f"GPU: {gpu}; driver {f.driver or '-'}",
        f"torch: {torch}",
        f"versions: {versions}",
        f"overall: {report.level}",
        format_checks(report.checks),
        _last_failure(runs),
    ]
    return redact("\n".join(lines), home=home)


def _without_data_names(text: str) -> str:
    return re.sub(r"[^\s'\"/\\:]+\.(?:jsonl|json|csv|tsv|parquet|txt|arrow)\b", "<data file>", text)
