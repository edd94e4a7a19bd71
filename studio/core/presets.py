"""Ready-made configs. The CPU demo preset is tuned so the offline demo model memorises its ten
answers in well under three minutes on two CPU cores; the GPU presets follow in the Config tab work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from studio.core.config import RunConfig

if TYPE_CHECKING:
    from studio.core.demo import DemoAssets


def cpu_demo_config(model_dir: Path | str, train_file: Path | str) -> RunConfig:
    """The demo run: the tiny demo model, QLoRA (NF4 + double quant) on CPU, short and deterministic."""
    config = RunConfig(name="demo")
    config.model.name_or_path = str(model_dir)
    config.data.train_file = str(train_file)
    config.quantization.mode = "4bit"
    config.lora.r = 16
    config.lora.lora_alpha = 32
    config.lora.lora_dropout = 0.0
    t = config.training
    t.learning_rate = 3e-3
    t.num_train_epochs = 1.0
    t.max_steps = 60
    t.per_device_train_batch_size = 2
    t.gradient_accumulation_steps = 1
    t.max_length = 256
    t.lr_scheduler_type = "constant_with_warmup"
    t.warmup_ratio = 0.05
    t.optim = "adamw_torch"
    t.gradient_checkpointing = False  # the demo model is tiny; recomputation would only cost time
    t.logging_steps = 1
    t.save_steps = 20
    t.save_total_limit = 2
    return config


def write_demo_config(assets: "DemoAssets") -> Path:
    """Write the demo's config beside it, with paths relative to it so the folder can be moved."""
    from studio.core.config import save_config

    config = cpu_demo_config(assets.model_dir.relative_to(assets.root), assets.dataset_path.relative_to(assets.root))
    save_config(config, assets.config_path)
    return assets.config_path
