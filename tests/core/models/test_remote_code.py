"""A model's own Python code never runs without the user's opt-in, and nothing ever asks on stdin.

transformers asks "Do you wish to run the custom code? [y/N]" when trust_remote_code is not given: a
piped "y" then ran a model folder's code. Every command must refuse such a model by name instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# transformers runs a copy of the module from its modules cache, so the marker's place is written in.
MARKER_CODE = """
from pathlib import Path
Path(MARKER).write_text("the model's own code ran")
from transformers import LlamaConfig


class MarkerConfig(LlamaConfig):
    model_type = "studio-marker"
"""


@pytest.fixture()
def remote_code_model(tmp_path, demo_assets) -> Path:
    """A model folder whose config maps AutoConfig to its own module, which leaves a file when it runs."""
    import shutil

    folder = tmp_path / "custom-model"
    shutil.copytree(demo_assets.model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="studio-marker", auto_map={"AutoConfig": "configuration_marker.MarkerConfig",
                                                        "AutoModelForCausalLM": "modeling_marker.MarkerModel"})
    (folder / "config.json").write_text(json.dumps(config))
    code = MARKER_CODE.replace("MARKER", repr(str(folder / "CODE-RAN")))
    (folder / "configuration_marker.py").write_text(code)
    (folder / "modeling_marker.py").write_text(code.replace("MarkerConfig", "MarkerModel"))
    return folder


def test_a_model_of_a_known_architecture_with_an_auto_map_needs_no_code(demo_assets, tmp_path):
    import shutil

    from studio.core.models.trained_base import needs_remote_code

    folder = tmp_path / "llama-with-map"
    shutil.copytree(demo_assets.model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig"}  # transformers' own Llama class loads it
    (folder / "config.json").write_text(json.dumps(config))
    assert not needs_remote_code(str(folder))
    assert not needs_remote_code(str(demo_assets.model_dir))


def test_with_the_opt_in_the_load_goes_on_to_the_models_code(remote_code_model):
    from studio.core.models.source import ModelLoadError
    from studio.core.models.trained_base import check_remote_code, load_causal_lm

    check_remote_code(str(remote_code_model), True)  # allowed: no refusal
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        check_remote_code(str(remote_code_model), False)
    try:
        load_causal_lm(str(remote_code_model), trust_remote_code=True)
    except Exception:  # noqa: BLE001 - the marker module is no real model; what matters is that its code ran
        pass
    assert (remote_code_model / "CODE-RAN").exists()
