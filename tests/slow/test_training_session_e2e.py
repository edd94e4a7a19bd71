"""sessions/training without Qt: Start checks once per process, the events become the plots' series and the tab's
texts, and a run's start and end are announced to plain callbacks."""

from __future__ import annotations

import signal

import pytest

from studio.core.config.settings import RunConfig, load_config
from studio.core.runs.store import RunStore
from studio.core.sessions.training import TrainingSession


@pytest.fixture
def counted(monkeypatch):
    """How often a RunConfig is validated and the sources are preflight-checked (check_run's first check, which
    the trainer used to repeat), in this process."""
    from studio.core.config import preflight

    counts = {"validate": 0, "check_sources": 0}
    validate, check_sources = RunConfig.validate, preflight.check_sources

    def counting_validate(self):
        counts["validate"] += 1
        validate(self)

    def counting_check_sources(config):
        counts["check_sources"] += 1
        check_sources(config)

    monkeypatch.setattr(RunConfig, "validate", counting_validate)
    monkeypatch.setattr(preflight, "check_sources", counting_check_sources)
    return counts


def test_a_start_validates_and_preflights_once_in_the_window_and_once_in_the_child(demo_assets, tmp_path, counted):
    from studio.core.train.child import EXIT_OK, train_child

    config = load_config(demo_assets.config_path)
    config.training.max_steps = 2
    session = TrainingSession(RunStore(tmp_path / "runs"))
    counted.update(validate=0, check_sources=0)

    run_dir = session.start(config)  # the window's half of Start
    assert run_dir is not None and run_dir.config_path.is_file()
    assert (counted["validate"], counted["check_sources"]) == (1, 1), counted
    written = run_dir.config_path.stat().st_mtime_ns, run_dir.config_path.read_text()

    # The child's half, in this process: the very `finetune-studio train RUN.toml --output RUN` the supervisor
    # starts (training_command), so what it counts is what the child process counts.
    counted.update(validate=0, check_sources=0)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        assert train_child(run_dir.config_path, output=run_dir.path) == EXIT_OK
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert (counted["validate"], counted["check_sources"]) == (1, 1), counted
    assert run_dir.status() == "completed"
    assert (run_dir.config_path.stat().st_mtime_ns, run_dir.config_path.read_text()) == written, \
        "run.toml is written once, by the window"
