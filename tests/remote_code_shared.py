"""What tests/core/models/test_remote_code.py and tests/slow/test_remote_code_e2e.py share (their helpers and fixtures, written once)."""

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
