"""The fast path: each speed-up's rule, its arrival in the trainer, and the same loss as the plain path."""

from __future__ import annotations

import sys
import types

import pytest

from studio.core.config.settings import RunConfig
from studio.core.plan.speedups import (
    LIGER_KERNELS, Capabilities, apply_liger, capabilities_for_card, expected_compute_dtype, plan_fast_path,
)
from studio.core.system.gpu import GpuInfo

CPU = Capabilities(device="cpu")
RTX_4060 = Capabilities(device="cuda", compute_capability=(8, 9), liger_installed=True, flash_attn_installed=True)


def _config(batch: int = 2, **training) -> RunConfig:
    config = RunConfig()
    config.training.per_device_train_batch_size = batch
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def test_on_a_cpu_nothing_is_switched_on_and_each_part_says_why():
    plan = plan_fast_path(_config(), CPU, compute_dtype="float32")
    assert plan.enabled and not plan.liger and not plan.padding_free
    assert plan.attn_implementation == "sdpa"
    assert "NVIDIA GPU" in plan.summary() and "FlashAttention-2 only" in plan.summary()


def test_padding_free_comes_with_flash_attention_only():
    no_flash = Capabilities(device="cuda", compute_capability=(8, 9), liger_installed=True)
    plan = plan_fast_path(_config(), no_flash, compute_dtype="bfloat16")
    assert plan.liger and not plan.padding_free and plan.attn_implementation == "sdpa"


def test_on_a_supported_gpu_everything_is_on():
    plan = plan_fast_path(_config(), RTX_4060, compute_dtype="bfloat16")
    assert plan.liger and plan.padding_free
    assert plan.attn_implementation == "flash_attention_2"


def test_a_gpu_without_the_gpu_extra_tells_how_to_install_it():
    caps = Capabilities(device="cuda", compute_capability=(8, 9))
    plan = plan_fast_path(_config(), caps, compute_dtype="bfloat16")
    assert not plan.liger and plan.attn_implementation == "sdpa"
    assert 'pip install "finetune-studio[gpu]"' in plan.summary()


@pytest.mark.parametrize("capability, dtype", [((7, 5), "float16"), ((8, 9), "float32")])
def test_flash_attention_needs_ampere_and_a_half_precision_dtype(capability, dtype):
    caps = Capabilities(device="cuda", compute_capability=capability, flash_attn_installed=True)
    assert plan_fast_path(_config(), caps, compute_dtype=dtype).attn_implementation == "sdpa"


def test_an_explicit_non_default_attention_is_kept():
    config = _config()
    config.model.attn_implementation = "eager"
    assert plan_fast_path(config, RTX_4060, compute_dtype="bfloat16").attn_implementation == "eager"


def test_batch_one_and_packing_have_no_padding_to_remove():
    one = plan_fast_path(_config(batch=1), CPU, compute_dtype="float32")
    assert not one.padding_free and "batch of one" in one.summary()
    packed = plan_fast_path(_config(packing=True), CPU, compute_dtype="float32")
    assert not packed.padding_free and "packing" in packed.summary()


def test_off_is_the_plain_path_whatever_the_machine_offers():
    plan = plan_fast_path(_config(fast_path=False), RTX_4060, compute_dtype="bfloat16")
    assert not (plan.enabled or plan.liger or plan.padding_free)
    assert plan.attn_implementation == "sdpa"
    assert plan.summary().startswith("Fast path off")


def test_capabilities_from_the_card_and_the_dtype_the_run_will_use():
    card = GpuInfo(name="NVIDIA GeForce RTX 4060", total_bytes=8 << 30, free_bytes=7 << 30,
                   compute_capability=(8, 9))
    caps = capabilities_for_card(card)
    assert caps.device == "cuda" and caps.compute_capability == (8, 9)
    assert capabilities_for_card(None).device == "cpu"
    config = RunConfig()
    assert expected_compute_dtype(config, caps) == "bfloat16"
    assert expected_compute_dtype(config, Capabilities(device="cuda", compute_capability=(7, 5))) == "float16"
    assert expected_compute_dtype(config, CPU) == "float32"
    config.quantization.compute_dtype = "float16"
    assert expected_compute_dtype(config, caps) == "float16"


def test_padding_free_reaches_the_trainer_and_lifts_trls_truncation(tmp_path):
    from studio.core.train.factories import Hardware, sft_config

    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    config = _config(max_length=300)
    fast = sft_config(config, hardware, tmp_path, has_eval=False, padding_free=True)
    assert fast.padding_free is True and fast.max_length is None
    plain = sft_config(config, hardware, tmp_path, has_eval=False)
    assert plain.padding_free is False and plain.max_length == 300


def test_truncation_keeps_the_first_tokens_of_ids_and_labels_alike():
    import datasets

    from studio.core.train.prepare import truncate

    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5], [6, 7]],
                                       "labels": [[-100, -100, 3, 4, 5], [-100, 7]]})
    assert truncate(rows, 5) is rows, "nothing longer: the dataset is reused as it is"
    cut = truncate(rows, 3)
    assert cut["input_ids"] == [[1, 2, 3], [6, 7]]
    assert cut["labels"] == [[-100, -100, 3], [-100, 7]]


class _FakeModel:
    def __init__(self, model_type):
        self.config = types.SimpleNamespace(model_type=model_type)


@pytest.fixture
def fake_liger(monkeypatch):
    """A stand-in for liger_kernel's instance patcher (the real kernels need CUDA), recording its calls."""
    calls = []
    monkey_patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": None, "qwen2": None}
    monkey_patch._apply_liger_kernel_to_instance = lambda model, **kwargs: calls.append((model, kwargs))
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", monkey_patch)
    return calls


def test_liger_patches_layer_kernels_but_never_the_loss(fake_liger):
    model = _FakeModel("llama")
    assert apply_liger(model) is None
    ((patched, kwargs),) = fake_liger
    assert patched is model
    assert kwargs == LIGER_KERNELS
    # TRL's SFTTrainer scores tokens with its own chunked LM head and refuses Liger's fused cross-entropy.
    assert kwargs["fused_linear_cross_entropy"] is False and kwargs["cross_entropy"] is False
    assert kwargs["rms_norm"] and kwargs["rope"] and kwargs["swiglu"]


def test_liger_says_when_a_model_type_has_no_kernels(fake_liger):
    message = apply_liger(_FakeModel("gpt_neox"))
    assert "gpt_neox" in message and fake_liger == []
