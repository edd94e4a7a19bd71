"""The folders the weights-rule tests load: the demo, a plain pickle copy, a crafted pickle that runs code when
unpickled unsafely, adapters on them and on a smaller base (shared by the fast and the slow half of those tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


# --------------------------------------------------------------------------------------- folders


class _RunsCode:
    """Pickled, it becomes `exec(code)`: what a crafted weights file does to whoever unpickles it unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the pickle ran code')",))


def _crafted_pickle(file: Path, key: str, marker: Path) -> None:
    """A real crafted pickle, proven dangerous: an unsafe load of it writes `marker` (then removed again)."""
    import torch

    torch.save({key: _RunsCode(marker)}, file)
    torch.load(file, weights_only=False)
    assert marker.is_file(), "the crafted pickle must run code when loaded unsafely, or the tests prove nothing"
    marker.unlink()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, demo_assets):
    """The demo model as pickle weights (plain, and crafted), a real LoRA adapter on it (and a crafted pickle one),
    and a second tiny base of hidden size 64 with a real adapter of its own."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("weights")
    marker = root / "PICKLE-RAN"
    demo = Path(demo_assets.model_dir)

    plain = root / "pickled-model"
    shutil.copytree(demo, plain)
    weights = {}
    for file in plain.glob("*.safetensors"):
        weights.update(load_file(str(file)))
        file.unlink()
    torch.save(weights, plain / "pytorch_model.bin")

    crafted = root / "crafted-model"
    shutil.copytree(plain, crafted)
    _crafted_pickle(crafted / "pytorch_model.bin", "model.embed_tokens.weight", marker)

    def adapter_on(base_dir: Path, folder: Path) -> Path:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      task_type="CAUSAL_LM"))
        peft_model.save_pretrained(str(folder))
        assert (folder / "adapter_model.safetensors").is_file()
        return folder

    adapter = adapter_on(demo, root / "demo-adapter")

    crafted_adapter = root / "crafted-adapter"
    shutil.copytree(adapter, crafted_adapter)
    (crafted_adapter / "adapter_model.safetensors").unlink()
    _crafted_pickle(crafted_adapter / "adapter_model.bin",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", marker)

    on_crafted = root / "adapter-on-crafted-base"  # an adapter whose recorded base is the crafted model
    shutil.copytree(adapter, on_crafted)
    adapter_config = json.loads((on_crafted / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(crafted)
    (on_crafted / "adapter_config.json").write_text(json.dumps(adapter_config))

    small = root / "small-base"  # the demo's architecture at hidden size 64 (the demo's is 128)
    config = LlamaConfig.from_pretrained(str(demo))
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(small))
    AutoTokenizer.from_pretrained(str(demo)).save_pretrained(str(small))
    small_adapter = adapter_on(small, root / "small-adapter")

    return dict(root=root, marker=marker, demo=demo, plain=plain, crafted=crafted, adapter=adapter,
                crafted_adapter=crafted_adapter, on_crafted=on_crafted, small=small, small_adapter=small_adapter)
