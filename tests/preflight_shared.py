"""What tests/core/config/test_preflight.py and tests/slow/test_preflight_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from pathlib import Path


def assert_refused_before_a_run_folder(result, run_folder: Path, studio_home: Path | None = None) -> str:
    """The refusal's one line (stderr), after checking what every refusal must be."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not run_folder.exists(), "no failed run folder for bad input"
    if studio_home is not None:
        runs = studio_home / "runs"
        assert not runs.exists() or not any(runs.iterdir()), "no run in the history either"
    return lines[0]
