"""What tests/core/export/test_export_templates.py and tests/slow/test_export_templates_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from pathlib import Path
import pytest
from ollama_standin import build_go_renderer


@pytest.fixture(scope="session")
def go_renderer(tmp_path_factory) -> Path:
    """Go's text/template, built once: the prompt Ollama builds from a Modelfile TEMPLATE."""
    return build_go_renderer(tmp_path_factory.mktemp("go"))


@pytest.fixture
def tokenizer(demo_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_assets.model_dir))
