"""The fast path: which speed-ups a run gets on this machine, decided before the model loads.

Everything here comes from well-kept libraries, switched on only where it is known to be correct:

- **Liger Kernel** (`pip install "finetune-studio[gpu]"`): Triton kernels for RMSNorm, RoPE and the
  SwiGLU MLP — fewer kernel launches and less activation memory. CUDA only. Its fused linear
  cross-entropy is *not* used: TRL's SFTTrainer already scores tokens through its own chunked LM
  head that never builds the (tokens × vocabulary) logits, and refuses Liger's.
- **Padding-free batches** (TRL `padding_free`): the examples of a batch are laid end to end in one
  row with restarting position ids, so no compute goes to padding, and FlashAttention-2's
  variable-length kernel keeps the examples apart. (transformers would also build a block-diagonal
  mask for sdpa, but building it every step cost more than the padding saved on the CPU, so the
  fast path uses padding-free batches with FlashAttention-2 only.) The loss is the padded one.
- **FlashAttention-2** instead of sdpa when the `flash-attn` package is installed and the GPU can
  run it (compute capability 8.0 or newer: RTX 30xx/40xx/50xx, A100, H100).

One memory lever is listed with them when a config asks for it, because it trades speed for memory
and a run's log should say whether it got it: **activation offloading**
(`training.activation_offloading`, TRL's own), on a CUDA GPU only — TRL's `OffloadActivations` needs an accelerator (on a CPU-only torch it fails at the
trainer's construction with `'NoneType' object has no attribute 'type'`), and on a CPU there is no
other memory to offload to. It works with PEFT and bitsandbytes: TRL unwraps the PEFT model to find
the output head it keeps on the card, skips parameters (the 4-bit weights), and empties the cache
bitsandbytes' dequantisation fills at every step.

Two more memory levers get a line when a config asks for them: **partial checkpointing**
(`training.checkpointing_every_n_layers`, transformers' `every_n_layers`: SFT only, since TRL's other trainers
switch checkpointing back on for every layer) and **the input embedding in CPU RAM** (`training.embedding_on_cpu`:
accelerate's CPU offload of one module, with bitsandbytes' `llm_int8_enable_fp32_cpu_offload`).

The plan is a pure function of the config and the machine's capabilities, so the Config tab can
show what a run will get, the training log says what it got, and tests can check every rule.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from studio.core.config.settings import RunConfig
from studio.core.plan.vram import checkpointing_every_n_layers, embedding_can_stay_on_cpu

__all__ = ["Capabilities", "FastPathPlan", "SpeedUp", "activation_offloading_applies", "apply_liger",
           "capabilities_for_card", "detect_capabilities", "expected_compute_dtype", "plan_fast_path"]

# Liger's layer kernels; its fused linear cross-entropy stays off (see the module docstring).
LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                 "fused_linear_cross_entropy": False}
FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers the fast path."""

    device: str  # "cuda" or "cpu"
    compute_capability: tuple[int, int] | None = None
    liger_installed: bool = False
    flash_attn_installed: bool = False


@dataclass(frozen=True)
class SpeedUp:
    """One speed-up of the plan: what the Config tab lists by `name` when it is `enabled`, and its log line."""

    name: str
    enabled: bool
    note: str
    """The line the training log and the tooltip show, e.g. "Liger Kernel: on (RMSNorm, RoPE, SwiGLU)"."""
    install_hint: str = ""
    """How to install what it needs, when only a missing package keeps it off."""


@dataclass(frozen=True)
class FastPathPlan:
    """What a run gets: `speedups`, one per speed-up, each on or off with why; `notes` are their log lines."""

    enabled: bool
    liger: bool
    padding_free: bool
    attn_implementation: str
    speedups: tuple[SpeedUp, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    """The log lines, one per speed-up; by default the speed-ups' notes."""

    def __post_init__(self) -> None:
        if not self.notes and self.speedups:
            object.__setattr__(self, "notes", tuple(speedup.note for speedup in self.speedups))

    @property
    def applied(self) -> tuple[SpeedUp, ...]:
        """The speed-ups this run gets (none when the fast path is off)."""
        return tuple(speedup for speedup in self.speedups if speedup.enabled) if self.enabled else ()

    @property
    def missing_packages(self) -> tuple[SpeedUp, ...]:
        """The speed-ups that are off only because a package is not installed."""
        return tuple(speedup for speedup in self.speedups if speedup.install_hint) if self.enabled else ()

    def summary(self) -> str:
        head = "Fast path on" if self.enabled else "Fast path off (the plain transformers + PEFT + TRL path)"
        return "\n".join([head, *(f"  {note}" for note in self.notes)])


def detect_capabilities(device: str) -> Capabilities:
    """Look at the installed packages and, on CUDA, the GPU; imports nothing heavy besides torch."""
    capability = None
    if device == "cuda":
        import torch

        capability = tuple(torch.cuda.get_device_capability())
    return Capabilities(
        device=device,
        compute_capability=capability,
        liger_installed=_liger_installed(),
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
    )


def _liger_installed() -> bool:
    # Liger's kernels are Triton programs: without Triton (Windows without triton-windows) it cannot run.
    return all(importlib.util.find_spec(name) is not None for name in ("liger_kernel", "triton"))


def capabilities_for_card(gpu: Any | None) -> Capabilities:
    """Capabilities from NVML's view of the card (a `gpu.GpuInfo`, None without one), without importing torch:
    what the Config tab shows before a run."""
    return Capabilities(
        device="cuda" if gpu is not None else "cpu",
        compute_capability=getattr(gpu, "compute_capability", None),
        liger_installed=_liger_installed(),
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
    )


def expected_compute_dtype(config: RunConfig, capabilities: Capabilities) -> str:
    """The compute dtype `library_configs.resolve_hardware` will pick, from the capabilities alone."""
    dtype = config.quantization.compute_dtype
    if dtype != "auto":
        return dtype
    if capabilities.device != "cuda":
        return "float32"
    capability = capabilities.compute_capability
    return "bfloat16" if capability is not None and capability >= (8, 0) else "float16"


def activation_offloading_applies(config: RunConfig, device: str) -> bool:
    """Whether the run gets TRL's activation offloading: asked for, and on a CUDA GPU (see the module docstring)."""
    return config.training.activation_offloading and device == "cuda"


def _offloading(config: RunConfig, device: str) -> tuple[SpeedUp, ...]:
    """The offloading line, only when the config asks for it (a run that does not keeps the log it had)."""
    t = config.training
    if not t.activation_offloading:
        return ()
    if device != "cuda":
        return (SpeedUp("activation offloading", False,
                        "activation offloading: ignored — it moves activations from a GPU to CPU RAM; a CPU run "
                        "has them in RAM already"),)
    what = "layer inputs gradient checkpointing keeps" if t.gradient_checkpointing else "saved activations"
    return (SpeedUp("activation offloading", True, f"activation offloading: on — the {what} wait in pinned CPU "
                                                   "RAM (less GPU memory, some speed for the copies)"),)


def _memory_levers(config: RunConfig, device: str) -> tuple[SpeedUp, ...]:
    """The partial checkpointing and input-embedding lines, each only when the config asks for it."""
    t, lines = config.training, []
    if t.gradient_checkpointing and t.checkpointing_every_n_layers > 1:
        every_n = checkpointing_every_n_layers(config)
        if every_n > 1:
            lines.append(SpeedUp("partial checkpointing", True, f"gradient checkpointing: every {every_n} layers "
                                 "(transformers' every_n_layers) — the others keep their activations and are not "
                                 "recomputed"))
        else:
            lines.append(SpeedUp("partial checkpointing", False, f"gradient checkpointing: every layer — "
                                 f"checkpointing_every_n_layers is for SFT; TRL's {t.method} trainer switches "
                                 "checkpointing back on for every layer around its reference or generation passes"))
    if t.embedding_on_cpu:
        applies = device == "cuda" and embedding_can_stay_on_cpu(config, tied=False)
        if device != "cuda":
            note = "input embedding in CPU RAM: ignored — a CPU run has it in RAM already"
        elif not applies:
            note = ("input embedding in CPU RAM: ignored — it needs a 4-bit or 8-bit base and an embedding that is "
                    "not trained (modules_to_save)")
        else:  # whether the base ties it to the output head is known once its config is read (train.run)
            note = ("input embedding in CPU RAM: on unless it is tied to the output head — copied to the GPU for "
                    "each forward pass's lookup, not kept for the backward pass")
        lines.append(SpeedUp("input embedding in CPU RAM", applies, note))
    return tuple(lines)


def plan_fast_path(config: RunConfig, capabilities: Capabilities, *, compute_dtype: str) -> FastPathPlan:
    """Decide each speed-up for `config` on a machine with `capabilities`."""
    t = config.training
    attn = config.model.attn_implementation
    offloading = _offloading(config, capabilities.device) + _memory_levers(config, capabilities.device)
    if not t.fast_path:
        return FastPathPlan(enabled=False, liger=False, padding_free=False, attn_implementation=attn,
                            speedups=(SpeedUp("FlashAttention-2", False, f"attention: {attn}"), *offloading))
    cuda = capabilities.device == "cuda"

    install = 'pip install "finetune-studio[gpu]"'
    if not cuda:
        liger = SpeedUp("Liger Kernel", False, "Liger Kernel: off — its kernels need an NVIDIA GPU")
    elif not capabilities.liger_installed:
        liger = SpeedUp("Liger Kernel", False, f"Liger Kernel: not installed — {install}", install_hint=install)
    else:
        liger = SpeedUp("Liger Kernel", True, "Liger Kernel: on (RMSNorm, RoPE, SwiGLU)")

    capability = capabilities.compute_capability
    flash_ok = (cuda and capabilities.flash_attn_installed and capability is not None
                and capability >= FLASH_ATTENTION_MIN_CAPABILITY and compute_dtype in ("bfloat16", "float16"))
    if attn == "sdpa" and flash_ok:
        attn = "flash_attention_2"
        attention = SpeedUp("FlashAttention-2", True, "attention: flash_attention_2 (instead of sdpa)")
    else:
        attention = SpeedUp("FlashAttention-2", False, f"attention: {attn}")

    if t.packing:
        padding = SpeedUp("padding-free batches", False, "padding-free: packing already lays examples end to end")
    elif t.per_device_train_batch_size == 1:
        padding = SpeedUp("padding-free batches", False,
                          "padding-free: off — a batch of one example has no padding to remove")
    elif attn != "flash_attention_2":
        # Without FlashAttention's variable-length kernel the packed row needs a block-diagonal mask built
        # every step; on the CPU that made the demo 12% slower than padding (benchmarks/train_speed.py).
        padding = SpeedUp("padding-free batches", False, "padding-free: off — it pays with FlashAttention-2 only")
    else:
        padding = SpeedUp("padding-free batches", True, "padding-free batches: on")
    return FastPathPlan(enabled=True, liger=liger.enabled, padding_free=padding.enabled, attn_implementation=attn,
                        speedups=(liger, attention, padding, *offloading))


def apply_liger(model: Any) -> str | None:
    """Patch `model` (before PEFT wraps it) with Liger's layer kernels; None when applied, else why not.

    Liger patches the model's transformers module for the whole process (RoPE is a module-level
    function), which is fine because every run trains in its own child process.
    """
    try:
        # The instance patcher is what liger's own `AutoLigerKernelForCausalLM` and transformers' Trainer call.
        from liger_kernel.transformers.monkey_patch import (
            MODEL_TYPE_TO_APPLY_LIGER_FN,
            _apply_liger_kernel_to_instance,
        )
    except ImportError as error:  # a broken install (e.g. a Triton that does not match torch) trains without it
        return f"Liger Kernel could not be imported ({error}); training without it"

    model_type = getattr(model.config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"Liger Kernel has no kernels for model type {model_type!r}; training without them"
    _apply_liger_kernel_to_instance(model=model, **LIGER_KERNELS)
    return None
