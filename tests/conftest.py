"""Shared pytest configuration."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before any QApplication exists: tests run on headless CI and dev boxes.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_SESSION_HOME: Path | None = None


def pytest_configure(config):
    """Point the studio's user data folder at a throwaway folder for the whole session.

    Set before collection so nothing (imports included, and every subprocess, which inherits
    the environment) ever touches the real user folder.
    """
    global _SESSION_HOME
    from studio.core.system.paths import HOME_ENV_VAR

    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="finetune-studio-home-"))
    os.environ[HOME_ENV_VAR] = str(_SESSION_HOME)
    # Every training child a test starts imports the fault hooks (inert unless a test sets its faults).
    from studio.core.train.hooks import ENV_VAR as HOOKS_ENV_VAR

    os.environ[HOOKS_ENV_VAR] = str(Path(__file__).with_name("fault_injection.py"))


SLOW_LANE = Path(__file__).with_name("slow")
"""The folder of the slow tests: each test in it is marked `slow`, and only there (`pytest -m "not slow"`, the fast lane,
runs in under two minutes)."""


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/slow/ `slow`; refuse the mark anywhere else, so the folder stays the one rule."""
    misplaced = [item.nodeid for item in items
                 if SLOW_LANE not in item.path.parents and item.get_closest_marker("slow") is not None]
    if misplaced:
        raise pytest.UsageError("marked slow outside tests/slow/ (move them there; the folder marks them): "
                                + ", ".join(misplaced))
    for item in items:
        if SLOW_LANE in item.path.parents:
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def studio_home() -> Path:
    """The session's stand-in for the user data folder (FINETUNE_STUDIO_HOME)."""
    assert _SESSION_HOME is not None
    return _SESSION_HOME


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """The offline demo (model, dataset, demo.toml), built once per session."""
    from studio.core.system.demo import build_demo
    from studio.core.config.presets import write_demo_config

    assets = build_demo(tmp_path_factory.mktemp("demo"))
    write_demo_config(assets)
    return assets


def _run_studio(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`finetune-studio ARGS` as a child process (`python -m studio`), output captured as text."""
    return subprocess.run([sys.executable, "-m", "studio", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def run_studio():
    """Call as `run_studio("train", config, "--output", run_dir)`; returns the CompletedProcess."""
    return _run_studio


@pytest.fixture
def qt_settings(tmp_path, qapp):
    """A private Qt settings store, so no saved state of another test (or of the user) is restored."""
    from PySide6.QtCore import QCoreApplication, QSettings

    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "qt-settings"))
    QSettings().clear()
    yield QSettings()
    QSettings().clear()
