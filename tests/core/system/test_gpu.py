"""Tests for studio.core.system.gpu: detection, host fallback and NVML via a fake module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from types import SimpleNamespace

import psutil
import pytest

from studio.core.system import gpu
from studio.core.system.gpu import (
    NO_GPU_TEXT, GpuInfo, GpuReading, HostReading, HostTelemetry, NvmlTelemetry, TelemetrySource, detect_gpu, detect_telemetry,
)

GIB = 1024**3
MIB = 1024**2


def _real_nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - any failure means "no GPU here"
        return False


HAS_NVIDIA_GPU = _real_nvml_works()
needs_no_gpu = pytest.mark.skipif(HAS_NVIDIA_GPU, reason="checks the no-GPU fallback")


# --------------------------------------------------------------- fake NVML


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def make_fake_nvml(**overrides) -> types.ModuleType:
    """A pynvml look-alike for one 8 GiB card; ``overrides`` replace functions."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.init_calls = 0

    def nvmlInit():  # noqa: N802 - mirrors the pynvml name
        mod.init_calls += 1

    def raise_not_supported(*args):
        raise FakeNVMLError("Not Supported")

    mod.nvmlInit = nvmlInit
    mod.nvmlDeviceGetHandleByIndex = lambda index: f"handle-{index}"
    # Old bindings return bytes; the code must decode them.
    mod.nvmlDeviceGetName = lambda handle: b"Fake RTX 9000"
    mod.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(
        total=8 * GIB, used=3 * GIB, free=5 * GIB
    )
    mod.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        SimpleNamespace(pid=os.getpid(), usedGpuMemory=1 * GIB),
        SimpleNamespace(pid=os.getpid() + 10_000_000, usedGpuMemory=2 * GIB),
    ]
    mod.nvmlDeviceGetUtilizationRates = lambda handle: SimpleNamespace(gpu=87, memory=40)
    mod.nvmlDeviceGetTemperature = raise_not_supported
    mod.nvmlDeviceGetPowerUsage = lambda handle: 123_456  # milliwatts
    mod.nvmlDeviceGetCudaComputeCapability = lambda handle: (8, 9)
    mod.raise_not_supported = raise_not_supported
    for name, value in overrides.items():
        setattr(mod, name, value)
    return mod


@pytest.fixture
def fake_nvml(monkeypatch):
    """Install a fake pynvml and forget any earlier (real) initialisation."""

    def install(**overrides):
        mod = make_fake_nvml(**overrides)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        monkeypatch.setattr(gpu, "_nvml_initialised_module", None)
        return mod

    return install


# ------------------------------------------------------------------ helpers



def test_module_import_is_qt_free_and_lazy():
    code = (
        "import sys, studio.core.system.gpu\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'pyqtgraph', 'superqt', 'pynvml', 'psutil')]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -------------------------------------------------------- detection / host


@needs_no_gpu
def test_detect_telemetry_falls_back_to_host_without_gpu():
    source = detect_telemetry()
    assert isinstance(source, HostTelemetry)
    assert isinstance(source, TelemetrySource)
    assert source.has_gpu is False
    assert source.description.startswith(NO_GPU_TEXT)
    assert "RAM" in source.description
    assert detect_gpu() is None


def test_detect_telemetry_without_pynvml_installed(monkeypatch):
    # None in sys.modules makes "import pynvml" raise ImportError.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu, "_nvml_initialised_module", None)
    assert isinstance(detect_telemetry(), HostTelemetry)
    assert detect_gpu() is None


def test_detect_telemetry_when_init_fails(fake_nvml):
    mod = fake_nvml()
    mod.nvmlInit = mod.raise_not_supported
    assert isinstance(detect_telemetry(), HostTelemetry)
    assert detect_gpu() is None


def test_detect_telemetry_when_no_device(fake_nvml):
    mod = fake_nvml()
    mod.nvmlDeviceGetHandleByIndex = mod.raise_not_supported
    assert isinstance(detect_telemetry(), HostTelemetry)


def test_host_telemetry_reads_current_process():
    source = HostTelemetry()
    before = time.time()
    reading = source.read(os.getpid())
    assert isinstance(reading, HostReading)
    assert before <= reading.time <= time.time()
    assert 0 < reading.process_rss_bytes < reading.host_total_bytes
    assert reading.host_total_bytes == source.host_total_bytes


def test_host_telemetry_idle_and_exited_process():
    source = HostTelemetry()
    assert source.read(None) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert source.read(child.pid) is None


def test_host_telemetry_has_no_reading_for_an_exited_process_not_yet_reaped():
    # The supervisor reaps the training process a moment after it ends; until then it is a zombie whose
    # memory reads as 0, which the RAM plot would draw as a drop to zero at the end of every run.
    source = HostTelemetry()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while time.time() < deadline and psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert source.read(child.pid) is None
    finally:
        child.wait()


def test_process_tree_includes_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert gpu._process_tree_pids(os.getpid()) >= {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()


# --------------------------------------------------------------- fake NVML


def test_nvml_telemetry_with_fake_module(fake_nvml):
    fake_nvml()
    source = detect_telemetry()
    assert isinstance(source, NvmlTelemetry)
    assert source.has_gpu is True
    assert source.description == "Fake RTX 9000 (8.0 GiB)"

    reading = source.read(os.getpid())
    assert isinstance(reading, GpuReading)
    assert reading.device_name == "Fake RTX 9000"
    assert reading.card_used_bytes == 3 * GIB
    assert reading.card_total_bytes == 8 * GIB
    # Only our pid's entry counts, not the unrelated process on the card.
    assert reading.process_used_bytes == 1 * GIB
    assert reading.utilization_pct == 87.0
    assert reading.temperature_c is None  # the sensor raised NVMLError
    assert reading.power_w == pytest.approx(123.456)


def test_nvml_counts_child_processes(fake_nvml):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake_nvml(
            nvmlDeviceGetComputeRunningProcesses=lambda handle: [
                SimpleNamespace(pid=os.getpid(), usedGpuMemory=1 * GIB),
                SimpleNamespace(pid=child.pid, usedGpuMemory=512 * MIB),
            ]
        )
        reading = NvmlTelemetry().read(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert reading.process_used_bytes == 1 * GIB + 512 * MIB


def test_nvml_every_optional_metric_can_fail(fake_nvml):
    mod = fake_nvml()
    for name in (
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetComputeRunningProcesses",
    ):
        setattr(mod, name, mod.raise_not_supported)
    reading = NvmlTelemetry().read(os.getpid())
    assert reading == GpuReading(
        time=reading.time,
        device_name="Fake RTX 9000",
        card_used_bytes=3 * GIB,
        card_total_bytes=8 * GIB,
    )


def test_nvml_process_usage_unknown_or_idle(fake_nvml):
    fake_nvml(
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)  # Windows WDDM
        ]
    )
    source = NvmlTelemetry()
    assert source.read(os.getpid()).process_used_bytes is None
    assert source.read(None).process_used_bytes is None


def test_nvml_process_not_on_card_reads_zero(fake_nvml):
    fake_nvml(nvmlDeviceGetComputeRunningProcesses=lambda handle: [])
    assert NvmlTelemetry().read(os.getpid()).process_used_bytes == 0


def test_nvml_falls_back_to_v2_process_query(fake_nvml):
    mod = fake_nvml()
    mod.nvmlDeviceGetComputeRunningProcesses = mod.raise_not_supported
    mod.nvmlDeviceGetComputeRunningProcesses_v2 = lambda handle: [
        SimpleNamespace(pid=os.getpid(), usedGpuMemory=256 * MIB)
    ]
    assert NvmlTelemetry().read(os.getpid()).process_used_bytes == 256 * MIB


def test_nvml_read_without_memory_info_returns_none(fake_nvml):
    mod = fake_nvml()
    source = NvmlTelemetry()
    mod.nvmlDeviceGetMemoryInfo = mod.raise_not_supported
    assert source.read(os.getpid()) is None


def test_nvml_initialised_once(fake_nvml):
    mod = fake_nvml()
    NvmlTelemetry()
    NvmlTelemetry()
    detect_gpu()
    assert mod.init_calls == 1


def test_detect_gpu_with_fake_module(fake_nvml):
    fake_nvml()
    assert detect_gpu() == GpuInfo(
        name="Fake RTX 9000",
        total_bytes=8 * GIB,
        free_bytes=5 * GIB,
        compute_capability=(8, 9),
        index=0,
    )


def test_detect_gpu_without_compute_capability(fake_nvml):
    mod = fake_nvml()
    mod.nvmlDeviceGetCudaComputeCapability = mod.raise_not_supported
    info = detect_gpu()
    assert info is not None
    assert info.compute_capability is None


# ---------------------------------------------------------------- real NVML


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU")
def test_real_nvml_reading():
    source = detect_telemetry()
    assert isinstance(source, NvmlTelemetry)
    assert NO_GPU_TEXT not in source.description
    reading = source.read(os.getpid())
    assert isinstance(reading, GpuReading)
    assert 0 < reading.card_used_bytes <= reading.card_total_bytes
    assert reading.process_used_bytes is None or reading.process_used_bytes >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU")
def test_real_detect_gpu():
    info = detect_gpu()
    assert info is not None
    assert info.name
    assert 0 <= info.free_bytes <= info.total_bytes
