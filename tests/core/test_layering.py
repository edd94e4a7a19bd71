"""The architecture holds: the import contracts in pyproject.toml ([tool.importlinter]) are kept, they would catch
a core module importing Qt or a lower layer importing a higher one, a widget importing a tab, a tab importing
another or reaching core beside its session, every core module has a user in the product, and the CLI starts
without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import studio

REPO = Path(studio.__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path, config: Path = REPO / "pyproject.toml") -> subprocess.CompletedProcess:
    """`lint-imports` on the `studio` package found under `root`, with the repository's own contracts."""
    env = {"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent), "NO_COLOR": "1"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(config)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _words(result: subprocess.CompletedProcess) -> str:
    """The report with its line wrapping undone, so a long contract name or import reads as one phrase."""
    return " ".join(result.stdout.split())


def _add_function(module: Path, body: str) -> None:
    module.write_text(module.read_text(encoding="utf-8") + f"\n\ndef _added():\n    {body}\n", encoding="utf-8")


@pytest.fixture
def studio_copy(tmp_path):
    """A copy of the studio package to break on purpose."""
    shutil.copytree(REPO / "studio", tmp_path / "studio", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_import_contracts_are_kept():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = (REPO / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert f"{contracts} kept, 0 broken" in result.stdout


def test_the_ui_exception_lists_name_only_imports_that_still_exist():
    """The ignore lists of the UI contracts only shrink: an import a tab no longer makes leaves its line behind as
    a warning here; delete the line."""
    result = _lint_imports(REPO)
    assert "No matches for ignored import" not in _words(result), result.stdout


def test_the_contracts_break_when_a_core_module_imports_qt(studio_copy):
    units = studio_copy / "studio" / "core" / "system" / "units.py"
    units.write_text(units.read_text() + "\n\ndef _window():\n    from PySide6.QtWidgets import QWidget\n")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "studio.core never imports Qt" in result.stdout and "BROKEN" in result.stdout
    assert "studio.core.system.units -> PySide6" in result.stdout


def test_the_contracts_break_when_a_lower_layer_imports_a_higher_one(studio_copy):
    issues = studio_copy / "studio" / "core" / "data" / "issues.py"
    issues.write_text(issues.read_text() + "\n\ndef _later():\n    from studio.core.export import merge\n")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "studio.core packages depend only downwards BROKEN" in result.stdout.replace("\n", " ")
    assert "studio.core.data.issues -> studio.core.export.merge" in result.stdout


def test_the_contracts_break_when_a_widget_imports_a_tab(studio_copy):
    _add_function(studio_copy / "studio" / "ui" / "widgets" / "qt_gpu_panel.py", "from studio.ui.tabs import runs_view")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "studio.ui.widgets know no tab and no run (core.train, core.runs) BROKEN" in _words(result)
    assert "studio.ui.widgets.qt_gpu_panel -> studio.ui.tabs.runs_view" in result.stdout


def test_the_contracts_break_when_a_tab_imports_another_or_core_beside_its_session(studio_copy):
    _add_function(studio_copy / "studio" / "ui" / "tabs" / "runs_view.py", "from studio.ui.tabs import chat_tab")
    _add_function(studio_copy / "studio" / "ui" / "tabs" / "dataset_tab.py", "from studio.core.train import run")
    result = _lint_imports(studio_copy)
    words = _words(result)
    assert result.returncode != 0
    assert "studio.ui tabs are independent of each other (the window wires them) BROKEN" in words
    assert "studio.ui.tabs.runs_view -> studio.ui.tabs.chat_tab" in words
    assert "studio.ui tabs reach studio.core only through studio.core.sessions BROKEN" in words
    assert "studio.ui.tabs.dataset_tab -> studio.core.train.run" in words


def test_a_stale_line_in_a_ui_exception_list_is_reported(studio_copy):
    config = studio_copy / "pyproject.toml"
    start = '[[tool.importlinter.contracts]]\nid = "ui-tabs-through-sessions"'
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert start in text
    head, contract = text.split(start)
    stale = '    "studio.ui.tabs.runs_view -> studio.core.train.run",\n'
    contract = contract.replace("ignore_imports = [\n", "ignore_imports = [\n" + stale, 1)
    config.write_text(head + start + contract, encoding="utf-8")
    assert "No matches for ignored import studio.ui.tabs.runs_view -> studio.core.train.run" in _words(
        _lint_imports(studio_copy, config))


def test_every_core_module_is_used_by_the_product_not_by_tests_alone():
    graph = grimp.build_graph("studio")
    packages = {m for m in graph.modules if (REPO / Path(*m.split("."), "__init__.py")).is_file()}
    unused = sorted(m for m in graph.modules if m.startswith("studio.core.") and m not in packages
                    and not graph.find_modules_that_directly_import(m) - {m})
    assert unused == []


def test_every_definition_has_a_user():
    """No dead code: every function, method and class under studio/ is named somewhere besides its definition (in
    the product, a test or a benchmark). Qt's and pyqtgraph's overrides (camelCase), TrainerCallback's `on_...`
    hooks and dunders are called by their libraries."""
    import ast
    import collections
    import re

    sources = {path: path.read_text(encoding="utf-8") for folder in ("studio", "tests", "benchmarks")
               for path in sorted((REPO / folder).rglob("*.py"))}
    words = collections.Counter(word for text in sources.values() for word in re.findall(r"\w+", text))
    dead = [f"{path.relative_to(REPO)}:{node.lineno} {node.name}" for path, text in sources.items()
            if path.is_relative_to(REPO / "studio") for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not (node.name.startswith(("__", "on_")) or re.search(r"[a-z][A-Z]", node.name))
            and words[node.name] <= 1]
    assert dead == []


def test_no_two_modules_define_the_same_name():
    """One of each: a name means one thing. Left for now, each with its reason."""
    import ast
    import collections

    allowed = {
        "main",  # the entry point of each program: the CLI, docs' generator, the llama.cpp child
        "_short_name", "_text",  # private helpers of different things
    }
    places = collections.defaultdict(list)
    for path in sorted((REPO / "studio").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                places[node.name].append(str(path.relative_to(REPO)))
    assert {name: where for name, where in places.items() if len(where) > 1 and name not in allowed} == {}


def test_no_core_module_imports_another_through_a_cycle():
    graph = grimp.build_graph("studio")
    core = sorted(m for m in graph.modules if m.startswith("studio.core."))
    cycles = sorted({tuple(sorted((a, b))) for a in core for b in core if a != b
                     and graph.direct_import_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)})
    assert cycles == []


def test_no_production_module_imports_test_code():
    offenders = [str(path.relative_to(REPO)) for path in (REPO / "studio").rglob("*.py")
                 if any(line.lstrip().startswith(("import tests", "from tests")) for line in path.read_text().splitlines())]
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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
