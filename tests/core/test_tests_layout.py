"""The tests mirror the code (issue 22, item 7): one folder per studio.core package, the UI's tabs and widgets apart,
and the slow end-to-end tests in tests/slow/, which is exactly what `pytest -m slow` selects, so
`pytest -m "not slow"` is the fast lane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def _collected(*args: str) -> list[str]:
    """The node ids `pytest --collect-only ARGS` selects, run from the repository as a developer runs it."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 5), result.stdout[-3000:] + result.stderr[-3000:]  # 5: nothing selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_each_core_package_has_its_own_test_folder():
    packages = {p.parent.name for p in (REPO / "studio" / "core").glob("*/__init__.py")}
    folders = {p.name for p in (TESTS / "core").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders == packages


def test_the_ui_tests_keep_tabs_and_widgets_apart():
    for folder in ("tabs", "widgets"):
        assert list((TESTS / "ui" / folder).glob("test_*.py")), f"tests/ui/{folder}/ holds no tests"


def test_pytest_m_slow_selects_exactly_the_tests_under_tests_slow():
    slow = _collected("-m", "slow")
    assert slow and all(node.startswith("tests/slow/") for node in slow), [n for n in slow if "tests/slow/" not in n]
    assert sorted(slow) == sorted(_collected("tests/slow"))
