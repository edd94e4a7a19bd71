"""The doctor in the window (issue 24): with "NVIDIA card, CPU-only torch" faked, the banner at the top shows the
finding and the install command; Help has System check and Copy diagnostics; the checks leave the GUI thread free."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMainWindow, QTabWidget

from studio.core.sessions.doctor import DoctorSession, examine
from studio.core.system import doctor
from studio.core.system.doctor import Disk, Facts, TorchFacts
from studio.core.system.gpu import GpuInfo
from studio.ui.tabs.system_check import QtSystemCheck

GIB = 1024**3
CARD_WITH_CPU_TORCH = Facts(
    os_name="windows", machine="AMD64", cpu="AMD Ryzen 5 7600",
    gpu=GpuInfo("NVIDIA GeForce RTX 4060", 8 * GIB, 7 * GIB, (8, 9)), driver="560.94",
    torch=TorchFacts("2.13.0+cpu"), ram_total_bytes=32 * GIB, ram_available_bytes=24 * GIB,
    disks=(Disk("the Hugging Face cache", "C:\\Users\\ayse\\.cache\\huggingface\\hub", 300 * GIB),),
    bitsandbytes="0.50.2", quantizer="llama-cpp-python 0.3.36", ollama="C:\\Ollama\\ollama.exe",
    versions=doctor.tested_versions(), tested=doctor.tested_versions())


def _window(qtbot, tmp_path, facts, *, gather_thread: list | None = None):
    window = QMainWindow()
    window.setCentralWidget(QTabWidget())
    qtbot.addWidget(window)

    def slow_examine(config, **kwargs):
        if gather_thread is not None:
            gather_thread.append(threading.current_thread())
        time.sleep(0.3)  # the real checks take seconds: the window must not wait for them
        return examine(config, gather=lambda **_: facts, **kwargs)

    session = DoctorSession(record=tmp_path / "doctor.json", fingerprint=lambda: "RTX 4060 | 560.94 | 2.13.0+cpu")
    system = QtSystemCheck(window, config=lambda: None, session=session, examine_fn=slow_examine)
    menu = window.menuBar().addMenu("&Help")
    system.add_actions(menu)
    window.resize(1180, 700)
    window.show()
    return window, system, menu


def test_an_nvidia_card_with_a_cpu_torch_shows_the_banner_with_the_fix(qtbot, tmp_path):
    threads: list = []
    window, system, menu = _window(qtbot, tmp_path, CARD_WITH_CPU_TORCH, gather_thread=threads)
    assert not system.bar.isVisible()  # the window is up before the checks end
    qtbot.waitUntil(lambda: system.bar.isVisible(), timeout=10_000)
    assert threads and threads[0] is not threading.main_thread()
    text = system.banner.text()
    assert "NVIDIA GeForce RTX 4060 is here, but torch 2.13.0+cpu is a CPU-only build" in text
    assert ('pip install --force-reinstall "torch==2.13.0+cu128" '
            '--extra-index-url https://download.pytorch.org/whl/cu128') \
        in text
    assert system.banner.isVisible() and system.bar.geometry().top() < window.centralWidget().geometry().top()
    assert system.bar.height() < 120  # two lines of text, not the tall squarish guess a tool bar makes of wrapped text
    assert [a.text() for a in menu.actions()] == ["System check…", "Copy diagnostics"]
    if (shot := __import__("os").environ.get("BANNER_SHOT")):
        window.grab().save(shot)

    # Copy diagnostics: the report, the user's name replaced.
    system.copy_diagnostics()
    copied = QGuiApplication.clipboard().text()
    assert "RTX 4060" in copied and "ayse" not in copied and "C:\\Users\\<user>" in copied


def test_a_sound_machine_shows_no_banner_and_the_same_device_is_not_checked_again(qtbot, tmp_path):
    sound = replace(CARD_WITH_CPU_TORCH, torch=TorchFacts("2.13.0+cu128", cuda="12.8", cuda_available=True))
    _, system, _ = _window(qtbot, tmp_path, sound)
    qtbot.waitUntil(lambda: system.session.report is not None, timeout=10_000)
    assert not system.bar.isVisible()
    qtbot.waitUntil(lambda: not system.tasks.busy, timeout=5_000)
    _, again, _ = _window(qtbot, tmp_path, sound)  # the next launch on the same device
    assert not again.tasks.busy and again.session.report is None


def test_the_real_window_has_the_help_entries(qtbot, studio_home):
    from studio.ui.main_window import QtMainWindow

    window = QtMainWindow(offer_demo=False)
    qtbot.addWidget(window)
    texts = [a.text() for a in window.menuBar().actions()[-1].menu().actions()]
    assert "System check…" in texts and "Copy diagnostics" in texts
    qtbot.waitUntil(lambda: not window.system_check.tasks.busy, timeout=120_000)


def test_the_config_tab_plans_for_the_card_runs_train_on(qtbot, studio_home):
    """The doctor's finding reaches the Config tab's presets and fit: an RTX 4060 under a CPU-only torch trains in
    RAM, so the tab plans without the card; with a CUDA torch it plans for the card."""
    from studio.core.sessions.doctor import DoctorReport
    from studio.ui.main_window import QtMainWindow

    window = QtMainWindow(offer_demo=False)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: not window.system_check.tasks.busy, timeout=120_000)
    cuda = replace(CARD_WITH_CPU_TORCH, torch=TorchFacts("2.13.0+cu128", cuda="12.8", cuda_available=True))

    window.system_check.session.apply(DoctorReport(facts=cuda, checks=()))
    assert window.config_tab.session.gpu.name == "NVIDIA GeForce RTX 4060"
    window.system_check.session.apply(DoctorReport(facts=CARD_WITH_CPU_TORCH, checks=()))
    assert window.config_tab.session.gpu is None
