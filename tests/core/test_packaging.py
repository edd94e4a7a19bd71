"""An installed studio (a wheel, not the source checkout) carries everything it reads at run time."""

from __future__ import annotations

from pathlib import Path


from studio.core.config.settings import tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_package_under_studio_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "studio").rglob("__init__.py")}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
