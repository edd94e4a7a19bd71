"""A model's own Python code never runs without the user's opt-in, and nothing ever asks on stdin.

transformers asks "Do you wish to run the custom code? [y/N]" when trust_remote_code is not given: a
piped "y" then ran a model folder's code. Every command must refuse such a model by name instead.
"""

from __future__ import annotations

import json

import pytest
from remote_code_shared import MARKER_CODE, remote_code_model  # noqa: F401  (shared with the other half)





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
