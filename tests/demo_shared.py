"""What tests/core/system/test_demo.py and tests/slow/test_demo_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import pytest
from studio.core.system.demo import DemoAssets, build_demo
from studio.core.system.paths import HOME_ENV_VAR


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A throwaway user data folder for this module, set as FINETUNE_STUDIO_HOME."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV_VAR, str(folder))
        yield folder


@pytest.fixture(scope="module")
def assets(home) -> DemoAssets:
    """The demo, built once into the default folder under `home`."""
    messages: list[str] = []
    built = build_demo(progress=messages.append)
    assert messages and messages[-1] == "Demo ready."
    return built


@pytest.fixture(scope="module")
def tokenizer(assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets.model_dir)
