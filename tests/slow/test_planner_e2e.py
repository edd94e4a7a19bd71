"""Fit to the card: the memory levers' estimate terms by hand, the levers reaching TRL (and what TRL really runs:
its offloading hooks and its chunked loss with PEFT), and the planner's choices on known shapes and cards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.config.settings import RunConfig
from planner_shared import (  # noqa: F401  (shared with the other half)
    MEASURED_TOKENS, TOY, _activation_term, _saved_bytes, _toy_config, _toy_peft_model, _within,
)

REPO = Path(__file__).resolve().parents[2]




# ------------------------------------------------------------------ what TRL really runs


@pytest.fixture(scope="module")
def demo_peft_model(demo_assets):
    """The demo model with its base in 4-bit NF4 (bitsandbytes, on the CPU) and a LoRA adapter on every linear."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.core.train.factories import Hardware, lora_config, quantization_config

    config = RunConfig()
    config.lora.lora_dropout = 0.0  # no randomness between the two passes compared
    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(demo_assets.model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=quantization_config(config, hardware))
    model = get_peft_model(model, lora_config(config))
    with torch.no_grad():  # lora_B starts at zero: give the adapter a non-trivial state so its gradients differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    return model


def _batch(seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 1000, (2, 48), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _gradients(model, context) -> dict:
    model.zero_grad(set_to_none=True)
    with context:
        loss = model(**_batch()).loss
        loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_trls_offloading_hooks_give_equal_gradients_on_a_4bit_peft_model(demo_peft_model, monkeypatch, checkpointing):
    """TRL's OffloadActivations (pack: copy each saved tensor to a new CPU buffer; unpack: bring it back with its
    strides) on the 4-bit PEFT demo model gives the same gradients as no hooks. TRL builds it only for an
    accelerator, so here the CPU stands in for the device: pinned memory and side streams are CUDA-only and off."""
    import contextlib

    import torch
    from trl.models import activation_offloading as trl_offloading

    model = demo_peft_model
    model.train()
    if checkpointing:
        model.base_model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        expected = _gradients(model, contextlib.nullcontext())
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'type'"):
            trl_offloading.get_act_offloading_ctx_manager(model)  # what SFTTrainer would do on this CPU-only torch
        monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cpu"))
        monkeypatch.setattr(torch.cpu, "empty_cache", lambda: None, raising=False)  # torch.cpu has none to empty
        context = trl_offloading.get_act_offloading_ctx_manager(model, use_pin_memory=False, use_streams=False)
        copied = []
        pack = context.pack_hook

        def counting_pack(tensor):
            tensor_id = pack(tensor)
            copied.append(context.tracker[tensor_id][1])  # True: copied out to a new buffer, brought back later
            return tensor_id

        context.pack_hook = counting_pack
        offloaded = _gradients(model, context)
    finally:
        if checkpointing:
            model.base_model.model.activation_checkpointing_disable()
    # Without checkpointing every saved activation is copied; with it only what the checkpointed layers keep (their
    # inputs: the demo model has 2 layers).
    assert sum(copied) >= (2 if checkpointing else 20), copied
    assert set(offloaded) == set(expected) and len(expected) > 0
    for name, grad in expected.items():
        assert torch.equal(offloaded[name], grad), name


def test_trls_chunked_loss_runs_with_peft_and_matches_the_full_logits_loss(demo_assets, tmp_path):
    """The estimate counts TRL's chunked LM head, not full logits, for the studio's QLoRA path: SFTTrainer puts its
    fused head on a PEFT model's base model, and its loss equals the full-logits loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer
    from trl.trainer.utils import FusedCausalLMOutput

    from studio.core.train.factories import Hardware, lora_config, quantization_config, sft_config

    config = RunConfig()
    config.lora.lora_dropout = 0.0
    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    model = AutoModelForCausalLM.from_pretrained(demo_assets.model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=quantization_config(config, hardware))
    rows = Dataset.from_dict({"input_ids": [list(range(5, 40))], "completion_mask": [[1] * 35]})
    trainer = SFTTrainer(model=model, args=sft_config(config, hardware, tmp_path, has_eval=False), train_dataset=rows,
                         processing_class=AutoTokenizer.from_pretrained(demo_assets.model_dir),
                         peft_config=lora_config(config))
    batch = _batch()
    peft_model = trainer.model
    assert hasattr(peft_model, "peft_config")
    with torch.no_grad():
        fused = peft_model(**batch, fused_lm_head=True)
        full = peft_model(**batch)
    assert isinstance(fused, FusedCausalLMOutput) and getattr(fused, "logits", None) is None
    assert full.logits.shape[-1] == peft_model.config.vocab_size, "without the flag: the full logits"
    assert torch.allclose(fused.loss, full.loss, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the GPU benchmark's dry run


def test_the_fit_benchmark_dry_run_lists_every_probe_on_the_cpu(tmp_path):
    output = tmp_path / "fit.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fit_gpu.py"), "--dry-run", "--output",
                             str(output)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(output.read_text())
    assert report["dry_run"] is True and report["figures"] == "to be taken on a lent GPU"
    cases = {(case["kind"], case["model"], case["path"]) for case in report["cases"]}
    for model in ("llama-3.1-8b", "llama-3.2-3b"):
        assert ("longest-context", model, "studio") in cases and ("longest-context", model, "plain") in cases
    assert ("speed", "llama-3.2-3b", "studio") in cases and ("speed", "llama-3.2-3b", "plain") in cases
    assert {case["offloading"] for case in report["cases"] if case["kind"] == "peak"} == {False, True}
    # The next memory levers, each measured against the estimate on the next GPU.
    levers = {case["chosen_by"]: case for case in report["cases"] if case["chosen_by"].startswith("lever")}
    assert levers["lever: every 2nd layer checkpointed"]["training"]["checkpointing_every_n_layers"] == 2
    assert levers["lever: LoRA dropout 0"]["lora"] == {"lora_dropout": 0.0}
    embedding = levers["lever: input embedding in CPU RAM"]
    assert embedding["model"] == "llama-3.1-8b" and embedding["training"]["embedding_on_cpu"] is True
    assert report["cases"][-len(levers):] == list(levers.values()), "last: what does not fit the budget waits"
    assert report["planned_seconds"] <= 8 * 60
    assert "figures to be taken on a lent GPU" in result.stdout


# ------------------------------------------------------------------ the next memory levers, measured on the CPU
#
# What autograd keeps for the backward pass is counted with torch.autograd.graph.saved_tensors_hooks on a random toy
# Llama (the TOY shape) in bfloat16 with a LoRA adapter on every linear layer cast to bfloat16 (what TRL does to a
# quantised model's adapter), so the frozen base layers save no input as bitsandbytes' do. Each distinct storage is
# counted once, parameters not at all. The hooks see the inputs non-reentrant checkpointing keeps, too. Each lever's
# saving is the difference of two measurements, compared with the difference of the estimate's activation term.












@pytest.mark.parametrize("every_n", [2, 4])
def test_partial_checkpointing_keeps_what_its_estimate_term_says(every_n):
    """transformers' every_n_layers: the layers left unchekpointed keep all they save; measured against every layer
    checkpointed, the extra bytes are the estimate's (within 5%; 2 and 6 of the 8 layers here)."""
    model = _toy_peft_model(0.0)
    every_layer = _saved_bytes(model, every_n=1)
    partial = _saved_bytes(model, every_n=every_n)
    assert every_layer < partial < _saved_bytes(model)
    estimated = (_activation_term(checkpointing_every_n_layers=every_n)
                 - _activation_term(checkpointing_every_n_layers=1))
    assert estimated > 0 and _within(partial - every_layer, estimated), (partial - every_layer, estimated)


def test_lora_dropout_0_saves_the_copies_its_estimate_term_counts(monkeypatch):
    """With dropout each adapted layer keeps its own dropped-out copy of its input and the dropout's mask; at 0 the
    layers reading one tensor share it. CUDA's dropout is torch.native_dropout (a 1-byte mask); the CPU's
    `torch.dropout` keeps a mask in the input's dtype, so here the CPU runs the CUDA op (it has a CPU kernel)."""
    import torch

    def cuda_dropout(input, p=0.5, training=True, inplace=False):
        return torch.native_dropout(input, p, training)[0] if training and p > 0 else input

    monkeypatch.setattr(torch.nn.functional, "dropout", cuda_dropout)
    saved = _saved_bytes(_toy_peft_model(0.05)) - _saved_bytes(_toy_peft_model(0.0))
    estimated = (_activation_term(0.05, gradient_checkpointing=False)
                 - _activation_term(0.0, gradient_checkpointing=False))
    assert estimated > 0 and _within(saved, estimated), (saved, estimated)


@pytest.mark.parametrize("checkpointing", [None, 1, 2], ids=["plain", "every-layer", "every-2nd"])
def test_partial_checkpointing_gives_equal_gradients_on_the_4bit_peft_demo(demo_peft_model, checkpointing):
    """transformers' every_n_layers on the 4-bit PEFT demo model (2 layers: every 2nd = the first only): the same
    gradients as checkpointing every layer and as none."""
    import contextlib

    import torch

    model = demo_peft_model
    model.train()
    expected = _gradients(model, contextlib.nullcontext())
    inner = model.base_model.model
    if checkpointing is not None:
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=checkpointing)
        model.enable_input_require_grads()
    try:
        flags = [layer.gradient_checkpointing for layer in inner.model.layers]
        got = _gradients(model, contextlib.nullcontext())
    finally:
        if checkpointing is not None:
            inner.activation_checkpointing_disable()
    assert flags == {None: [False, False], 1: [True, True], 2: [True, False]}[checkpointing]
    assert set(got) == set(expected) and expected
    for name, grad in expected.items():
        assert torch.equal(got[name], grad), name


def test_sfttrainer_checkpoints_only_every_nth_layer_of_the_demo(demo_assets, tmp_path):
    """The run's own path: SFTTrainer with the studio's SFTConfig (one step of training, where the Trainer switches
    checkpointing on) checkpoints the first of the demo's 2 layers only."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from studio.core.train.factories import Hardware, lora_config, sft_config

    config = RunConfig()
    config.training.checkpointing_every_n_layers = 2
    config.training.max_steps, config.training.save_steps = 1, 100
    hardware = Hardware(device="cpu", compute_dtype="float32", optim="adamw_torch")
    model = AutoModelForCausalLM.from_pretrained(demo_assets.model_dir, dtype=torch.float32)
    rows = Dataset.from_dict({"input_ids": [list(range(5, 40))], "completion_mask": [[1] * 35]})
    trainer = SFTTrainer(model=model, args=sft_config(config, hardware, tmp_path, has_eval=False), train_dataset=rows,
                         processing_class=AutoTokenizer.from_pretrained(demo_assets.model_dir),
                         peft_config=lora_config(config))
    trainer.train()
    layers = trainer.model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]
