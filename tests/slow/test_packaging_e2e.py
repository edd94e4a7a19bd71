"""An installed studio (a wheel, not the source checkout) carries everything it reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def test_a_wheel_install_finds_the_demo_sources_model_shapes_and_icon(tmp_path):
    source, wheel_dir, target = tmp_path / "source", tmp_path / "wheel", tmp_path / "site"
    # A copy of what the build reads, so setuptools' build/ and egg-info folders land there, not in the checkout.
    for name in ("studio", "resources"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir)], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    [wheel] = wheel_dir.glob("finetune_studio-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)

    # The installed copy, put ahead of the editable install; it builds the demo from its own resources.
    probe = f"""
import sys
sys.path.insert(0, {str(target)!r})
import studio
assert studio.__file__.startswith({str(target)!r}), studio.__file__
from studio.core.system.demo import build_demo, demo_resource_dir
from studio.core.models.source import bundled_shapes
from studio.ui.app import icon_path
assert str(demo_resource_dir()).startswith({str(target)!r}), demo_resource_dir()
assert sorted(bundled_shapes()) == ["llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b", "qwen2.5-7b"]
assert icon_path().is_file(), icon_path()
print(build_demo({str(tmp_path / "demo")!r}).model_dir)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (Path(result.stdout.strip()) / "config.json").is_file(), result.stdout
