"""install.sh end to end (issue 24): a fresh virtual environment in both branches (uv, python -m venv), a temporary
HOME for the desktop entry; here (no NVIDIA driver) it must choose the CPU torch, and the installed studio must
answer --version, open its window offscreen and pass its doctor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
WINDOW = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv)
from studio.ui.main_window import QtMainWindow
window = QtMainWindow(offer_demo=False)
window.show()
def done():
    print("window:", window.windowTitle(), window.isVisible(), flush=True)
    window.close()  # waits for the background work (the doctor's first-launch check) like a user's close
    app.quit()
QTimer.singleShot(1500, done)
app.exec()
"""


def _uv(tmp_path_factory) -> str:
    if found := shutil.which("uv"):
        return str(Path(found).parent)
    tool = tmp_path_factory.mktemp("uv-tool")  # uv from PyPI, into a throwaway folder
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tool), "uv"], check=True)
    return str(tool / "bin")


def _cache(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


@pytest.mark.parametrize("branch", ["uv", "venv"])
def test_install_sh_end_to_end_in_a_fresh_environment(branch, tmp_path, tmp_path_factory):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "XDG_DATA_HOME")}
    # The caches stay the real ones (a temporary HOME would make every wheel download again).
    if pip_cache := _cache([sys.executable, "-m", "pip", "cache", "dir"]):
        env["PIP_CACHE_DIR"] = pip_cache
    env.update(HOME=str(home), FINETUNE_STUDIO_HOME=str(tmp_path / "data"), PYTHON=getattr(sys, "_base_executable", sys.executable),
               UV_CACHE_DIR=str(Path.home() / ".cache" / "uv"))
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    if branch == "uv":
        env["PATH"] = _uv(tmp_path_factory) + os.pathsep + env["PATH"]
        if os.environ.get("PIP_FIND_LINKS"):
            # This machine has no route to download.pytorch.org; pip finds the CPU wheel in its find-links folder, uv
            # reads no pip settings: the same folder is handed to it the way a user with a wheel mirror would.
            env["TORCH_WHEELS"] = os.environ["PIP_FIND_LINKS"]
    else:
        env["FINETUNE_STUDIO_NO_UV"] = "1"
    venv = tmp_path / "venv"
    started = time.monotonic()
    out = subprocess.run([str(REPO / "install.sh"), "--venv", str(venv)], env=env, capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    took = time.monotonic() - started
    print(f"install.sh ({branch}): {took:.0f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"({'uv' if branch == 'uv' else 'python -m venv'})" in out.stdout
    assert "torch build: cpu — no NVIDIA driver: the CPU build" in out.stdout
    assert "overall: " in out.stdout and "Installed. Start it" in out.stdout

    python = venv / "bin" / "python"
    torch = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                           env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.split()
    assert torch == ["2.13.0+cpu", "None"]
    version = subprocess.run([str(venv / "bin" / "finetune-studio"), "--version"], env=env, capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == "finetune-studio 0.1.0"
    located = subprocess.run([str(python), "-c", "import studio; print(studio.__file__)"], env=env,
                             capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(venv) in located  # the installed copy, not this checkout
    window = subprocess.run([str(python), "-c", WINDOW], env={**env, "QT_QPA_PLATFORM": "offscreen"},
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "window: Finetune Studio True" in window.stdout, window.stdout + window.stderr

    entry = home / ".local" / "share" / "applications" / "finetune-studio.desktop"
    assert f"Exec={venv}/bin/finetune-studio" in entry.read_text()
    assert (home / ".local" / "share" / "icons" / "hicolor" / "256x256" / "apps" / "finetune-studio.png").is_file()
