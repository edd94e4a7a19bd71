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


@pytest.fixture(scope="session")
def trained_run(demo_assets, tmp_path_factory) -> Path:
    """The one full demo training run of the session (the CLI, as a user runs it); returns the run dir."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = _run_studio("train", demo_assets.config_path, "--output", run_dir)
    assert result.returncode == 0, f"demo training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return run_dir


@pytest.fixture(scope="session")
def sensitive_run(demo_assets, tmp_path_factory) -> Path:
    """A QLoRA run (NF4 + double quantisation, the studio's defaults) on the NF4-sensitive demo model
    (demo.make_nf4_sensitive): its adapter answers its training prompts on the 4-bit base it trained on and
    mostly not on the 16-bit weights — the case where chat, merge and export must use the trained weights."""
    from studio.core.config.settings import load_config, save_config
    from studio.core.system.demo import make_nf4_sensitive
    from studio.core.runs.events import EventWriter
    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    root = tmp_path_factory.mktemp("nf4-sensitive")
    model_dir = root / "model"
    shutil.copytree(demo_assets.model_dir, model_dir)
    make_nf4_sensitive(model_dir)
    config = load_config(demo_assets.config_path)
    config.model.name_or_path = str(model_dir)
    config.training.max_steps = 120  # until the adapter answers every training prompt on the 4-bit base
    run = RunDirectory(root / "run")
    run.path.mkdir()
    save_config(config, run.config_path)
    writer = EventWriter(run.events_path)
    try:
        assert run_training(config, run, writer.write) == "completed"
    finally:
        writer.close()
    return run.path
