"""What tests/core/train/test_preference.py and tests/slow/test_preference_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
import json
from pathlib import Path
from studio.core.config.settings import RunConfig, load_config
from studio.core.methods.registry import method as method_spec


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _config(demo_assets, method: str, train_file: Path, **training) -> RunConfig:
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(train_file)
    config.training.method = method
    config.training.max_steps = 4
    if method == "grpo":
        config.grpo.num_generations = 2
        config.grpo.max_completion_length = 16
        config.grpo.kl_coefficient = 0.04  # so the KL is computed and logged
    for key, value in training.items():  # a [training] setting, or one of the method's own section
        section = config.training if hasattr(config.training, key) else getattr(config, method)
        assert hasattr(section, key), key
        setattr(section, key, value)
    return config
