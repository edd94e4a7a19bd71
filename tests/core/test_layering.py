"""The core stays headless: no Qt anywhere under studio.core, and the CLI starts without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import studio.core

QT_PACKAGES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy")
CORE_DIR = Path(studio.core.__file__).parent


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_every_core_module_loads_no_qt():
    code = f"""
import importlib, pkgutil, sys
import studio.core
names = [m.name for m in pkgutil.walk_packages(studio.core.__path__, "studio.core.")]
assert len(names) >= 14, names
for name in names:
    importlib.import_module(name)
qt = sorted(m for m in sys.modules if m.split(".")[0] in {QT_PACKAGES!r})
print("imported", len(names), "modules; qt:", qt)
assert not qt, qt
"""
    result = _python(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "qt: []" in result.stdout


def test_no_core_source_file_imports_qt():
    pattern = re.compile(r"^\s*(?:import|from)\s+(%s)\b" % "|".join(QT_PACKAGES), re.MULTILINE)
    files = sorted(CORE_DIR.rglob("*.py"))
    assert len(files) >= 14
    offenders = [f"{path.relative_to(CORE_DIR)}: {match.group(0).strip()}"
                 for path in files for match in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_cli_starts_without_loading_torch_or_transformers():
    code = """
import sys
import studio.cli
studio.cli.build_parser()
heavy = sorted(m for m in ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes") if m in sys.modules)
print("heavy:", heavy)
assert not heavy, heavy
"""
    result = _python(code)
    assert result.returncode == 0, result.stdout + result.stderr
