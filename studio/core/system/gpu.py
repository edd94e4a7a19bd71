"""GPU and host memory telemetry behind one small interface.

Everything the UI plots comes from a :class:`TelemetrySource`, so tests can feed
hand-made readings and the app can fall back to the training process's RAM on
machines without an NVIDIA GPU.

``pynvml`` (nvidia-ml-py) and ``psutil`` are imported lazily: importing this
module must stay cheap because the main window imports it at start-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar, runtime_checkable

from studio.core.system.units import format_bytes

__all__ = [
    "NO_GPU_TEXT",
    "GpuInfo",
    "GpuReading",
    "HostReading",
    "HostTelemetry",
    "NvmlTelemetry",
    "Reading",
    "TelemetrySource",
    "detect_gpu",
    "detect_telemetry",
    "driver_version",
]

#: Phrase shown whenever the app is running without NVML; the UI keys off it.
NO_GPU_TEXT = "No NVIDIA GPU detected"

_GIB = 1024**3
_MIB = 1024**2

_T = TypeVar("_T")


@dataclass(frozen=True)
class GpuReading:
    """One sample of an NVIDIA card.

    ``process_used_bytes`` is the memory used on the card by the watched
    process (and its children), ``None`` when no process is watched or the
    driver does not report per-process usage (e.g. Windows WDDM).
    """

    time: float
    device_name: str
    card_used_bytes: int
    card_total_bytes: int
    process_used_bytes: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class HostReading:
    """One sample of the watched process's resident memory on the host."""

    time: float
    process_rss_bytes: int
    host_total_bytes: int


Reading = GpuReading | HostReading


@dataclass(frozen=True)
class GpuInfo:
    """Static facts about a card, used to pick sensible training presets."""

    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int] | None = None
    index: int = 0


@runtime_checkable
class TelemetrySource(Protocol):
    """Anything that can be sampled for memory telemetry.

    ``read`` is called from a worker thread; it must be cheap (well under the
    sampling interval) and must not raise for transient failures: return
    ``None`` when there is nothing to report.
    """

    description: str
    has_gpu: bool

    def read(self, pid: int | None) -> GpuReading | HostReading | None:
        """Sample now; ``pid`` is the training process to attribute memory to."""
        ...




# --------------------------------------------------------------------------- #
# Process tree helpers (psutil)
# --------------------------------------------------------------------------- #


def _import_psutil() -> ModuleType | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _process_tree(psutil: ModuleType, pid: int) -> list[Any]:
    """The process and its descendants; data-loader workers hold memory too."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return []
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    return [proc, *children]


def _is_zombie(psutil: ModuleType, proc: Any) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True  # gone altogether


def _process_tree_pids(pid: int) -> set[int]:
    psutil = _import_psutil()
    if psutil is None:
        return {pid}
    return {pid} | {p.pid for p in _process_tree(psutil, pid)}


# --------------------------------------------------------------------------- #
# NVML
# --------------------------------------------------------------------------- #

# NVML keeps a reference count per nvmlInit; we initialise once per module
# object and never shut down, so readers on any thread can share the handle.
# Keyed on the module so a fake pynvml injected by a test gets its own init.
_nvml_lock = threading.Lock()
_nvml_initialised_module: ModuleType | None = None


def _nvml() -> ModuleType:
    """Import and initialise pynvml; raises ImportError or NVMLError."""
    global _nvml_initialised_module
    import pynvml

    with _nvml_lock:
        if _nvml_initialised_module is not pynvml:
            pynvml.nvmlInit()
            _nvml_initialised_module = pynvml
    return pynvml


def _text(value: str | bytes) -> str:
    # Old nvidia-ml-py releases return bytes for names.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class NvmlTelemetry:
    """Telemetry of one NVIDIA card through NVML.

    The constructor raises if NVML or the device is unavailable; use
    :func:`detect_telemetry` for the never-raising path.
    """

    has_gpu = True

    def __init__(self, index: int = 0) -> None:
        self._nvml = nvml = _nvml()
        self.index = index
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.device_name = _text(nvml.nvmlDeviceGetName(self._handle))
        self.total_bytes = int(nvml.nvmlDeviceGetMemoryInfo(self._handle).total)
        self.description = f"{self.device_name} ({format_bytes(self.total_bytes, style='memory')})"

    def read(self, pid: int | None) -> GpuReading | None:
        """Sample the card; ``None`` if even its memory cannot be read."""
        nvml, handle = self._nvml, self._handle
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError:
            return None
        return GpuReading(
            time=time.time(),
            device_name=self.device_name,
            card_used_bytes=int(mem.used),
            card_total_bytes=int(mem.total),
            process_used_bytes=self._process_used(pid),
            utilization_pct=self._metric(
                lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            ),
            temperature_c=self._metric(
                lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            ),
            # NVML reports milliwatts.
            power_w=self._metric(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
        )

    def _metric(self, fn: Callable[[], _T]) -> _T | None:
        # Consumer cards and some drivers lack individual sensors; a missing
        # one must blank that label, not kill the sampler.
        try:
            return fn()
        except self._nvml.NVMLError:
            return None

    def _compute_processes(self) -> list[Any]:
        nvml = self._nvml
        try:
            return list(nvml.nvmlDeviceGetComputeRunningProcesses(self._handle))
        except nvml.NVMLError:
            # Drivers older than the bindings lack the _v3 entry point.
            legacy = getattr(nvml, "nvmlDeviceGetComputeRunningProcesses_v2", None)
            if legacy is None:
                raise
            return list(legacy(self._handle))

    def _process_used(self, pid: int | None) -> int | None:
        if pid is None:
            return None
        try:
            procs = self._compute_processes()
        except self._nvml.NVMLError:
            return None
        # Inside a container NVML reports host pids, so nothing matches and
        # this reads 0; the card-wide curve is still correct there.
        pids = _process_tree_pids(pid)
        total = 0
        for proc in procs:
            if proc.pid not in pids:
                continue
            used = getattr(proc, "usedGpuMemory", None)
            if used is None:
                return None
            total += int(used)
        return total


# --------------------------------------------------------------------------- #
# Host fallback
# --------------------------------------------------------------------------- #


class HostTelemetry:
    """Resident memory of the training process when there is no NVIDIA GPU."""

    has_gpu = False

    def __init__(self, description: str | None = None) -> None:
        self._psutil = _import_psutil()
        if description is None:
            description = (
                f"{NO_GPU_TEXT} — showing the training process's RAM"
                if self._psutil is not None
                else f"{NO_GPU_TEXT} — install psutil to see the training process's RAM"
            )
        self.description = description
        self.host_total_bytes = int(self._psutil.virtual_memory().total) if self._psutil else 0

    def read(self, pid: int | None) -> HostReading | None:
        """RSS of ``pid`` and its children; ``None`` when idle or it has exited."""
        psutil = self._psutil
        if pid is None or psutil is None:
            return None
        procs = _process_tree(psutil, pid)
        if not procs or _is_zombie(psutil, procs[0]):
            # An exited child not yet reaped by the supervisor reads as 0 bytes: not a reading to plot.
            return None
        rss = 0
        for proc in procs:
            try:
                rss += int(proc.memory_info().rss)
            except psutil.Error:
                # A child that exited between listing and reading is fine;
                # only the root vanishing means there is nothing to plot.
                if proc.pid == pid:
                    return None
        return HostReading(
            time=time.time(),
            process_rss_bytes=rss,
            host_total_bytes=self.host_total_bytes,
        )


# --------------------------------------------------------------------------- #
# Detection
# --------------------------------------------------------------------------- #


def detect_telemetry(index: int = 0) -> TelemetrySource:
    """NVML telemetry for card ``index`` if available, else the host fallback.

    Never raises: a missing driver, library or device all mean "no GPU".
    """
    try:
        return NvmlTelemetry(index)
    except Exception:  # noqa: BLE001 - ImportError, NVMLError, OSError alike
        return HostTelemetry()


def detect_gpu(index: int = 0) -> GpuInfo | None:
    """Name, memory and compute capability of card ``index``; ``None`` if absent."""
    try:
        nvml = _nvml()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    except Exception:  # noqa: BLE001 - see detect_telemetry
        return None
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        capability: tuple[int, int] | None = (int(major), int(minor))
    except Exception:  # noqa: BLE001 - optional; old drivers lack it
        capability = None
    return GpuInfo(
        name=name,
        total_bytes=int(mem.total),
        free_bytes=int(mem.free),
        compute_capability=capability,
        index=index,
    )


def driver_version() -> str | None:
    """The NVIDIA driver's version as NVML reports it ("550.54.14"); ``None`` without NVML or a driver."""
    try:
        return _text(_nvml().nvmlSystemGetDriverVersion())
    except Exception:  # noqa: BLE001 - see detect_telemetry
        return None
