"""Issue 21, "one preflight for every refusal": bad input to `finetune-studio train` is exit 2 and one line naming
the file or key, with no traceback, before any run folder exists (items 14, 15, 16, 18)."""

from __future__ import annotations

from pathlib import Path


from studio.core.config.settings import load_config, save_config


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


# ------------------------------------------------------------------------------------------------ item 16


def _config_with(demo_assets, folder: Path, **changes) -> Path:
    """The demo config with `section.field` changes (set together, so validation sees them at once)."""
    config = load_config(demo_assets.config_path)
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        setattr(getattr(config, section), name, value)
    path = folder / "train.toml"
    save_config(config, path)
    return path


def test_an_init_adapter_of_another_quantisation_is_refused_before_the_run_folder(tmp_path, demo_assets, run_studio,
                                                                                 trained_run):
    config = _config_with(demo_assets, tmp_path, model__init_adapter=str(trained_run), quantization__mode="none")
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", config, "--output", run), run)
    assert f"model.init_adapter = '{trained_run}': its adapter was trained on the " in line
