"""Training speed and peak VRAM of the studio's path against the plain transformers + PEFT + TRL path.

On a CUDA GPU, for the Llama-3.2-3B and Llama-3.1-8B shapes (random weights built from the configs in
resources/model_configs/, nothing to download), each path trains QLoRA (NF4, double quant) r=16 on
all linear layers, sequence 2048, batch 1, gradient checkpointing, paged 8-bit AdamW:

- **plain**: `benchmarks/plain_trl_sft.py`'s `build_trainer`, the script a user writes from the
  libraries' docs (no studio code), given the run's settings (`studio.core.config.settings.to_dict`);
- **studio**: `studio.core.train.run.run_training` with `training.fast_path = True` (see
  studio/core/plan/speedups.py: Liger Kernel, FlashAttention-2 and padding-free batches where available).

Every case runs in its own child process, so each starts with a clean card and no monkey-patch of one
path (Liger patches transformers' Llama module, not only the model instance) can reach the other.
Both paths read the same JSONL file of plain-text rows. Each row is `seq - 1` whitespace-separated
words `t<id>` with ids drawn at random below the shape's vocabulary size; the model folder gets a
word-level tokenizer that maps `t<id>` to id `<id>`, so a row encodes to exactly those ids plus the
end-of-sequence token, `seq` tokens, on both paths (the studio appends EOS itself, TRL appends the
EOS string before tokenising). No padding, no truncation, all tokens trained. The children record a
digest of the token ids they trained on; the report says whether the two paths saw the same tokens.

Measured in each child, the same way for both paths (a callback and a wrapper of `training_step`
are added to whichever `transformers.Trainer` the path builds):

- **tokens/s**: for each optimiser step, the non-padding input tokens of its batches (sum of the
  attention mask; all tokens of a padding-free batch) over the wall time between the ends of
  consecutive steps (`torch.cuda.synchronize()` first); the median over the steps after the warm-up.
- **peak VRAM**: as benchmarks/vram_accuracy.py — `torch.cuda.max_memory_reserved()` + CUDA context
  (NVML-measured) + paged optimiser states (unified memory, outside torch's pool).
- **MFU**: model FLOPs per token × tokens/s ÷ the GPU's dense BF16 tensor peak (table below). Model
  FLOPs per token use the usual convention (PaLM paper, appendix B; nanoGPT; torchtitan):
  `6·N + 12·L·d_attn·T`, with N the weights that take part in matrix multiplies (attention and MLP
  projections of every layer plus the LM head; the embedding lookup is not a matmul), L layers,
  d_attn = heads × head_dim, T the sequence length. "6N" counts forward (2N) plus backward for
  activations (2N) and for weights (2N) as if the whole model trained; with a frozen 4-bit base the
  weight-gradient third is skipped while gradient checkpointing recomputes the forward (2N), so the
  work done is of the same size — but neither the recomputation nor the NF4 dequantisation nor the
  LoRA adapters' own FLOPs are counted. This is the figure torchtune and Unsloth-style reports quote.
- **8 GB cap** (an RTX 4060 stand-in): the 8B shape on both paths with
  `torch.cuda.set_per_process_memory_fraction((cap − CUDA context) / card memory)`; reported as the
  steps completed or out of memory. The cap bounds torch's allocator only: paged optimiser states
  live in unified memory, which on a real 8 GB card the driver pages out to host memory.

    python benchmarks/gpu_speed.py --dry-run               # the cases and the FLOPs per token, no GPU
    python benchmarks/gpu_speed.py --output speed.json     # everything, side by side (one CUDA GPU)
    python benchmarks/gpu_speed.py --quick                 # fewer steps
    python benchmarks/gpu_speed.py --cpu-smoke             # the whole pipeline on the CPU, tiny demo model
    python benchmarks/gpu_speed.py --profile prof/         # also write where each case's step time goes

Results go to stdout as Markdown (for docs/BENCHMARKS.md) and, with --output, as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vram_accuracy  # noqa: E402  (also puts the repo root on sys.path)

from studio.core.config.settings import RunConfig, to_dict  # noqa: E402
from studio.core.models.source import bundled_shapes  # noqa: E402
from studio.core.plan.vram import CUDA_CONTEXT_BYTES, GIB  # noqa: E402

MODELS = ("llama-3.2-3b", "llama-3.1-8b")
PATHS = ("plain", "studio")
SEQ = 2048
BATCH = 1
RANK = 16
CAP_MODEL = "llama-3.1-8b"
CAP_BYTES = 8 * GIB
WARMUP, STEPS = 3, 10
QUICK_WARMUP, QUICK_STEPS = 2, 4
TARGET_SPEEDUP = 1.5  # studio tokens/s ÷ plain tokens/s, at least
TARGET_VRAM_RATIO = 0.6  # studio peak ÷ plain peak, at most
RESULT_PREFIX = "GPU_SPEED_RESULT "
SMOKE_MODEL = "demo"  # --cpu-smoke: studio.core.system.demo's tiny Llama
SMOKE_SEQ, SMOKE_WARMUP, SMOKE_STEPS = 128, 1, 2

# Dense (no 2:4 sparsity) BF16 tensor-core peaks in TFLOPS, FP32 accumulate, matched against
# torch.cuda.get_device_name() in this order (first match wins). NVIDIA datasheets quote the sparse
# figure; the dense one is half of it. A GPU not listed gets no MFU rather than a guessed one.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"H100 PCIe", 756.5, "H100 datasheet, PCIe: 1,513 sparse"),
    (r"H100 NVL", 835.5, "H100 datasheet, NVL: 1,671 sparse"),
    (r"H200 NVL", 835.5, "H200 datasheet, NVL: 1,671 sparse"),
    (r"\bH100\b", 989.5, "H100 datasheet, SXM: 1,979 sparse"),
    (r"\bH200\b", 989.5, "H200 datasheet, SXM: 1,979 sparse"),
    (r"\bA100\b", 312.0, "A100 datasheet: 312 dense, 624 sparse"),
    (r"\bL4\b", 121.0, "L4 datasheet: 242 sparse"),
    (r"\bA10\b", 125.0, "A10 datasheet: 125 dense, 250 sparse (not the A10G, which is not listed)"),
    (r"RTX 4090", 165.2, "Ada Lovelace whitepaper, RTX 4090: FP16/BF16 tensor with FP32 accumulate"),
    # Not in NVIDIA's whitepaper: derived from the RTX 4090's per-SM rate (165.2 TF / 128 SMs / 2.52 GHz
    # = 512 FLOP per clock per SM) × 24 SMs × 2.46 GHz boost. 15.1 TFLOPS is the non-tensor FP32 rate.
    (r"RTX 4060(?! Ti)", 30.2, "derived: 24 SMs x 2.46 GHz x 512 BF16 FLOP/clock/SM (FP32 accumulate)"),
)


@dataclass(frozen=True)
class Case:
    """One path training one shape; `cap_bytes` > 0 emulates a card of that size."""

    model: str
    path: str  # "plain" | "studio"
    seq: int = SEQ
    batch: int = BATCH
    cap_bytes: int = 0

    @property
    def label(self) -> str:
        cap = f" cap {self.cap_bytes / GIB:g} GiB" if self.cap_bytes else ""
        return f"{self.model} {self.path} seq{self.seq} b{self.batch}{cap}"


def cases(models=MODELS, *, cap: bool = True, seq: int = SEQ, batch: int = BATCH) -> list[Case]:
    """Both paths for every shape, then both paths of the cap shape under the cap."""
    found = [Case(model, path, seq, batch) for model in models for path in PATHS]
    if cap:
        found += [Case(CAP_MODEL, path, seq, batch, CAP_BYTES) for path in ("studio", "plain")]
    return found


# ------------------------------------------------------------------------------ arithmetic


def matmul_parameters(config: dict[str, Any]) -> int:
    """Weights of a Llama-style decoder that take part in matrix multiplies: q, k, v, o, gate, up,
    down of every layer, and the LM head (also when tied to the embedding, which is only a lookup)."""
    d = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or d // heads
    attention = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    mlp = 3 * d * config["intermediate_size"]
    return config["num_hidden_layers"] * (attention + mlp) + d * config["vocab_size"]


def model_flops_per_token(config: dict[str, Any], seq: int) -> int:
    """6·N + 12·L·d_attn·T (see the module docstring)."""
    heads = config["num_attention_heads"]
    d_attn = heads * (config.get("head_dim") or config["hidden_size"] // heads)
    return 6 * matmul_parameters(config) + 12 * config["num_hidden_layers"] * d_attn * seq


def peak_bf16_flops(device_name: str | None) -> tuple[float, str] | None:
    """(FLOPS, source) of the GPU's dense BF16 peak, or None for a GPU not in the table."""
    for pattern, tflops, source in PEAK_BF16_TFLOPS:
        if device_name and re.search(pattern, device_name):
            return tflops * 1e12, source
    return None


def mfu(flops_per_token: float, tokens_per_second: float | None, peak_flops: float | None) -> float | None:
    if not tokens_per_second or not peak_flops:
        return None
    return flops_per_token * tokens_per_second / peak_flops


def cap_fraction(cap_bytes: int, context_bytes: int, total_bytes: int) -> float:
    """The `set_per_process_memory_fraction` that leaves torch `cap − context` bytes of a `total`-byte card."""
    if cap_bytes <= context_bytes:
        raise ValueError(f"a {cap_bytes / GIB:.2f} GiB cap leaves nothing beside a "
                         f"{context_bytes / GIB:.2f} GiB CUDA context")
    fraction = (cap_bytes - context_bytes) / total_bytes
    if fraction > 1:
        raise ValueError(f"this card ({total_bytes / GIB:.2f} GiB) is smaller than the "
                         f"{cap_bytes / GIB:.2f} GiB cap: nothing to emulate")
    return fraction


def median_tokens_per_second(tokens: list[int], seconds: list[float], warmup: int) -> float | None:
    """Median over the steps after the warm-up of each step's tokens ÷ its seconds."""
    rates = [t / s for t, s in list(zip(tokens, seconds))[warmup:] if s > 0]
    return statistics.median(rates) if rates else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


# ------------------------------------------------------------------------------ model and data


def write_word_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer whose word `t<i>` is token i (0 pad, 1 end of sequence, 2 unknown)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(str(folder))
    (folder / "word_tokenizer.json").write_text(json.dumps({"vocab_size": vocab_size}), encoding="utf-8")


def has_word_tokenizer(folder: Path, vocab_size: int) -> bool:
    try:
        return json.loads((folder / "word_tokenizer.json").read_text(encoding="utf-8"))["vocab_size"] == vocab_size
    except (OSError, ValueError, KeyError):
        return False


def model_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def write_text_rows(path: Path, rows: int, seq: int, vocab_size: int, *, seed: int = 0) -> Path:
    """`rows` plain-text rows of `seq - 1` random words; each encodes to `seq` tokens with EOS."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            out.write(json.dumps({"text": " ".join(f"t{rng.randrange(3, vocab_size)}" for _ in range(seq - 1))}))
            out.write("\n")
    return path


def prepare_shape(model: str, folder: Path, timeout: int) -> Path:
    """A random-weight model of a bundled shape with the word tokenizer, built in a child process (the
    parent never holds a CUDA context while the cases run)."""
    vocab = json.loads(bundled_shapes()[model].read_text(encoding="utf-8"))["vocab_size"]
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and has_word_tokenizer(folder, vocab):
        return folder
    done = subprocess.run([sys.executable, __file__, "--build-model", model, "--model-dir", str(folder)],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"building {model} failed:\n{done.stderr[-3000:]}")
    return folder


def _build_model_here(model: str, folder: Path) -> None:
    vram_accuracy.build_random_model(model, folder, device="cuda")
    write_word_tokenizer(folder, model_config(folder)["vocab_size"])


def prepare_demo(folder: Path) -> Path:
    """studio.core.system.demo's tiny Llama (vocabulary 1024) in its own folder, with the word tokenizer."""
    from studio.core.system.demo import build_demo

    if (folder / "config.json").is_file() and has_word_tokenizer(folder, model_config(folder)["vocab_size"]):
        return folder
    demo = build_demo(folder.parent / f"{folder.name}-source")
    folder.mkdir(parents=True, exist_ok=True)
    for item in demo.model_dir.iterdir():  # the weights and config, not the demo's BPE tokenizer
        if item.name in ("config.json", "generation_config.json") or item.suffix == ".safetensors":
            shutil.copyfile(item, folder / item.name)
    write_word_tokenizer(folder, model_config(folder)["vocab_size"])
    return folder


# ------------------------------------------------------------------------------ one case, in a child


def case_config(case: Case, model_dir: str, data_file: str, *, device: str, steps: int) -> RunConfig:
    """The run both paths train: the studio's QLoRA defaults for the shape (vram_accuracy.case_config)."""
    config = vram_accuracy.case_config(vram_accuracy.Case(case.model, case.seq, case.batch, True, RANK), model_dir)
    config.name = case.label
    config.data.train_file = data_file
    config.data.format = "text"
    config.data.eval_fraction = 0.0
    config.quantization.compute_dtype = "bfloat16" if device == "cuda" else "auto"  # auto = float32 on CPU
    t = config.training
    t.optim = "auto"  # paged_adamw_8bit on CUDA, adamw_torch on the CPU, on both paths
    t.fast_path = case.path == "studio"
    t.max_steps = steps
    t.save_steps = 1_000_000  # no checkpoint inside the timed steps
    t.save_total_limit = 1
    return config


class Probe:
    """Step end times, tokens per step and the trained token ids, from whichever Trainer a path builds."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.trainer: Any = None
        self.started: float | None = None
        self.step_ends: list[float] = []
        self.step_tokens: list[int] = []
        self.pending_tokens = 0
        self.row_digests: list[str] = []
        self.losses: list[Any] = []  # each micro-batch's loss tensor; read after training (no extra sync)
        self.profile_to: Path | None = None  # --profile: where to write the profile of the first measured steps
        self.profile_steps: tuple[int, int] = (0, 0)  # [first, last) optimiser steps to profile
        self.profiler: Any = None

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def count(self, inputs: dict[str, Any]) -> None:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is not None:
            self.pending_tokens += int(mask.sum())
            rows = [row[keep.bool()] for row, keep in zip(ids, mask)]
        else:  # padding-free: one row of examples laid end to end, each restarting its position ids
            self.pending_tokens += int(ids.numel())
            flat, positions = ids.reshape(-1), inputs["position_ids"].reshape(-1)
            starts = [int(i) for i in (positions == 0).nonzero().flatten()] + [flat.numel()]
            rows = [flat[a:b] for a, b in zip(starts, starts[1:])]
        for row in rows:
            self.row_digests.append(hashlib.sha256(json.dumps(row.tolist()).encode()).hexdigest())

    def tokens_digest(self) -> str:
        """The same for two runs that trained the same rows, whatever their order."""
        return hashlib.sha256("".join(sorted(self.row_digests)).encode()).hexdigest()[:16]

    def durations(self) -> list[float]:
        ends = [self.started, *self.step_ends]
        return [b - a for a, b in zip(ends, ends[1:])]


def _instrument(probe: Probe) -> None:
    """Add the probe to every Trainer that starts training in this process (either path builds its own)."""
    import transformers

    class ProbeCallback(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            probe.started = probe.now()

        def on_step_begin(self, args, state, control, **kwargs):
            if probe.profile_to is not None and state.global_step == probe.profile_steps[0]:
                probe.profiler = start_profiler(probe.cuda)

        def on_step_end(self, args, state, control, **kwargs):
            probe.step_ends.append(probe.now())
            probe.step_tokens.append(probe.pending_tokens)
            probe.pending_tokens = 0
            if probe.profiler is not None and state.global_step >= probe.profile_steps[1]:
                write_profile(probe.profiler, probe.profile_to, probe.profile_steps[1] - probe.profile_steps[0])
                probe.profiler = None

    original_train = transformers.Trainer.train

    def train(self, *args, **kwargs):
        if probe.trainer is None:
            probe.trainer = self
            self.add_callback(ProbeCallback())
            step = self.training_step

            def counted_step(model, inputs, *rest, **more):
                probe.count(inputs)
                loss = step(model, inputs, *rest, **more)
                probe.losses.append(loss.detach())
                return loss

            self.training_step = counted_step
        return original_train(self, *args, **kwargs)

    transformers.Trainer.train = train


PROFILE_ENV = "STUDIO_GPU_SPEED_PROFILE"
PROFILE_STEPS = 2


def start_profiler(cuda: bool) -> Any:
    """torch.profiler over the next steps: where a step's time goes (host work, kernel launches, kernels)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    profiler = profile(activities=activities, record_shapes=False)
    profiler.__enter__()
    return profiler


def write_profile(profiler: Any, path: Path, steps: int) -> None:
    """The profiled steps' busiest operators by device time and by host time, and the counts that tell a
    launch-bound step (many short kernels, device idle) from a compute-bound one."""
    profiler.__exit__(None, None, None)
    averages = profiler.key_averages()
    # torch 2.4+ names device time `device`; older releases `cuda`.
    device_key = "self_cuda_time_total" if averages and not hasattr(averages[0], "self_device_time_total") \
        else "self_device_time_total"
    kernels = [e for e in profiler.events() if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
    device_us = sum(getattr(e, device_key, 0) for e in averages)
    host_us = sum(e.self_cpu_time_total for e in averages)
    summary = {"steps": steps, "device_kernels": len(kernels), "device_busy_seconds": device_us / 1e6,
               "host_busy_seconds": host_us / 1e6}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps(summary) + "\n\n")
        out.write(averages.table(sort_by=device_key, row_limit=40) + "\n\n")
        out.write(averages.table(sort_by="self_cpu_time_total", row_limit=40) + "\n")


def _train_studio(config: RunConfig, work: Path, events: list[dict[str, Any]]) -> None:
    from studio.core.runs.store import RunDirectory
    from studio.core.train.run import run_training

    run_dir = RunDirectory(work / "run")
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_training(config, run_dir, events.append, stop_requested=lambda: False)


def _train_plain(config: RunConfig, work: Path) -> None:
    from datasets import load_dataset

    import plain_trl_sft

    settings = to_dict(config)
    dataset = load_dataset("json", data_files=config.data.train_file, split="train")  # the "text" rows as they are
    trainer = plain_trl_sft.build_trainer(settings, work / "plain", max_steps=config.training.max_steps,
                                          dataset=dataset)
    trainer.train()


def _is_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def run_case(case: Case, model_dir: Path, data_file: Path, warmup: int, steps: int, device: str) -> dict[str, Any]:
    """Train warm-up + measured steps of one case and measure it (call in a fresh process)."""
    cuda = device == "cuda"
    used_before = vram_accuracy._device_used_bytes() if cuda else None
    import torch

    result: dict[str, Any] = {"status": "ok"}
    context = None
    if cuda:
        torch.cuda.init()
        a = torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
        (a @ a).sum().item()  # cuBLAS handle and workspace
        torch.cuda.synchronize()
        used_after = vram_accuracy._device_used_bytes()
        if used_before is not None and used_after is not None:
            context = used_after - used_before - torch.cuda.memory_reserved()
        del a
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        result.update(device=torch.cuda.get_device_name(), device_total_bytes=int(total), context_bytes=context)
        if case.cap_bytes:
            try:
                fraction = cap_fraction(case.cap_bytes, context if context is not None else CUDA_CONTEXT_BYTES, total)
            except ValueError as error:
                return {**result, "status": "skipped", "error": str(error)}
            torch.cuda.set_per_process_memory_fraction(fraction)
            result["cap_fraction"] = round(fraction, 6)
        torch.cuda.reset_peak_memory_stats()
    elif case.cap_bytes:
        return {"status": "skipped", "error": "the memory cap needs a CUDA GPU"}

    config = case_config(case, str(model_dir), str(data_file), device=device, steps=warmup + steps)
    probe = Probe(cuda)
    if os.environ.get(PROFILE_ENV):
        probe.profile_to = Path(os.environ[PROFILE_ENV]) / f"{re.sub(r'[^A-Za-z0-9.-]+', '-', case.label)}.txt"
        probe.profile_steps = (warmup, warmup + PROFILE_STEPS)
    _instrument(probe)
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-speed-") as work:
        try:
            if case.path == "studio":
                _train_studio(config, Path(work), events)
            else:
                _train_plain(config, Path(work))
        except Exception as error:  # noqa: BLE001 - reported as the case's status
            result["status"] = "oom" if cuda and _is_oom(error) else "failed"
            result["error"] = f"{type(error).__name__}: {error}"[-2000:]
        paged = 0
        optimizer = getattr(probe.trainer, "optimizer", None)
        for state in optimizer.state.values() if optimizer is not None else []:
            for value in state.values():
                if isinstance(value, torch.Tensor) and getattr(value, "is_paged", False):
                    paged += value.numel() * value.element_size()

    seconds = probe.durations()
    tokens = probe.step_tokens
    result.update(
        steps_completed=len(tokens), steps_expected=warmup + steps, warmup_steps=warmup,
        step_tokens=tokens, step_seconds=[round(s, 5) for s in seconds],
        tokens_per_second=median_tokens_per_second(tokens, seconds, warmup),
        median_step_seconds=statistics.median(seconds[warmup:]) if len(seconds) > warmup else None,
        tokens_digest=probe.tokens_digest() if probe.row_digests else None,
        paged_state_bytes=paged,
        losses=[round(float(loss), 5) for loss in probe.losses],
    )
    fast = [e["message"] for e in events
            if e.get("event") == "log" and str(e.get("message", "")).startswith("Fast path")]
    if fast:
        result["fast_path"] = fast[0]
    if cuda:
        result.update(max_reserved_bytes=int(torch.cuda.max_memory_reserved()),
                      max_allocated_bytes=int(torch.cuda.max_memory_allocated()))
        if result["status"] == "ok":
            result["peak_bytes"] = result["max_reserved_bytes"] + (context or 0) + paged
    if result["status"] == "ok" and len(tokens) < warmup + steps:
        result["status"] = "short"  # trained fewer steps than asked: the data ran out
    return result


def run_case_in_child(case: Case, model_dir: Path, data_file: Path, warmup: int, steps: int, device: str,
                      timeout: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--run-case", json.dumps(dataclasses.asdict(case)),
               "--model-dir", str(model_dir), "--data-file", str(data_file), "--warmup", str(warmup),
               "--steps", str(steps), "--device", device]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        return {"status": "failed", "error": done.stderr[-3000:]}
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# ------------------------------------------------------------------------------ the report


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "liger-kernel", "flash-attn"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine(rows: list[dict[str, Any]], device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "versions": _versions()}
    if device == "cuda":
        first = next((r for r in rows if r.get("device")), {})
        info["gpu"] = first.get("device")
        info["gpu_memory_bytes"] = first.get("device_total_bytes")
        peak = peak_bf16_flops(info["gpu"])
        info["peak_bf16_tflops"] = peak[0] / 1e12 if peak else None
        info["peak_source"] = peak[1] if peak else "GPU not in the peak table: MFU omitted"
        try:
            import torch

            info["cuda"] = torch.version.cuda
        except ImportError:
            pass
    else:
        info["gpu"] = None
        info["cpu"] = platform.processor() or platform.machine()
    return info


def add_mfu(rows: list[dict[str, Any]], flops_per_token: dict[str, int], peak: float | None) -> None:
    for row in rows:
        row["flops_per_token"] = flops_per_token[row["model"]]
        value = mfu(row["flops_per_token"], row.get("tokens_per_second"), peak) if not row["cap_bytes"] else None
        row["mfu"] = None if value is None else round(value, 4)


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shape (uncapped), the baseline's figures beside ours and the ratios against the targets."""
    found = []
    for model in dict.fromkeys(r["model"] for r in rows if not r["cap_bytes"]):
        side = {r["path"]: r for r in rows if r["model"] == model and not r["cap_bytes"]}
        plain, studio = side.get("plain", {}), side.get("studio", {})
        speedup = ratio(studio.get("tokens_per_second"), plain.get("tokens_per_second"))
        vram = ratio(studio.get("peak_bytes"), plain.get("peak_bytes"))
        found.append({
            "model": model,
            "plain_tokens_per_second": plain.get("tokens_per_second"),
            "studio_tokens_per_second": studio.get("tokens_per_second"),
            "speedup": None if speedup is None else round(speedup, 3),
            "speedup_target_met": None if speedup is None else speedup >= TARGET_SPEEDUP,
            "plain_peak_bytes": plain.get("peak_bytes"),
            "studio_peak_bytes": studio.get("peak_bytes"),
            "vram_ratio": None if vram is None else round(vram, 3),
            "vram_target_met": None if vram is None else vram <= TARGET_VRAM_RATIO,
            "plain_mfu": plain.get("mfu"),
            "studio_mfu": studio.get("mfu"),
            "same_tokens": (plain.get("tokens_digest") is not None
                            and plain.get("tokens_digest") == studio.get("tokens_digest")),
            "mean_loss_plain": mean_loss(plain),
            "mean_loss_studio": mean_loss(studio),
        })
    return found


def mean_loss(row: dict[str, Any]) -> float | None:
    """The mean training loss over every step of a case (both paths see the same rows, maybe in another
    order, so the mean over the run is what can be compared, not step by step)."""
    losses = row.get("losses") or []
    return round(statistics.fmean(losses), 5) if losses else None


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _gib(value: int | None) -> str:
    return "—" if not value else f"{value / GIB:.2f}"


def _met(value: bool | None) -> str:
    return "" if value is None else (" ✓" if value else " ✗")


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    v = m["versions"]
    where = (f"{m['gpu']} ({_gib(m.get('gpu_memory_bytes'))} GiB), CUDA {m.get('cuda')}" if m.get("gpu")
             else f"CPU ({m.get('cpu')}) — smoke run, not a measurement")
    lines = [
        f"**Machine:** {where}; Python {m['python']}; torch {v['torch']}, transformers {v['transformers']}, "
        f"trl {v['trl']}, peft {v['peft']}, bitsandbytes {v['bitsandbytes']}, accelerate {v['accelerate']}, "
        f"liger-kernel {v['liger-kernel']}, flash-attn {v['flash-attn']}",
        f"**Command:** `{report['command']}`",
        f"**Settings:** QLoRA NF4 + double quant, r={s['rank']} all-linear, sequence {s['seq']}, batch {s['batch']}, "
        f"gradient checkpointing, optimiser {s['optim']}; {s['warmup']} warm-up + {s['steps']} measured steps, "
        f"medians over the measured steps. MFU: (6·N + 12·L·d·T) × tokens/s ÷ "
        + (f"{m['peak_bf16_tflops']:g} TFLOPS dense BF16 ({m['peak_source']})." if m.get("peak_bf16_tflops")
           else "the GPU's dense BF16 peak (not known here, so omitted)."),
    ]
    fast = next((r["fast_path"] for r in report["rows"] if r.get("fast_path")), None)
    if fast:
        lines.append("**Studio fast path:** " + "; ".join(part.strip() for part in fast.splitlines()[1:]))
    lines += [
        "",
        f"| model | tokens/s plain | tokens/s studio | speed-up (≥{TARGET_SPEEDUP:g}×) | peak VRAM plain GiB "
        f"| peak VRAM studio GiB | VRAM ratio (≤{TARGET_VRAM_RATIO:g}×) | MFU plain | MFU studio | same tokens "
        f"| mean loss plain | mean loss studio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for c in report["comparisons"]:
        lines.append(
            f"| {c['model']} | {_num(c['plain_tokens_per_second'], ',.0f')} | "
            f"{_num(c['studio_tokens_per_second'], ',.0f')} | "
            f"{_num(c['speedup'], '.2f', '×')}{_met(c['speedup_target_met'])} | "
            f"{_gib(c['plain_peak_bytes'])} | {_gib(c['studio_peak_bytes'])} | "
            f"{_num(c['vram_ratio'], '.2f', '×')}{_met(c['vram_target_met'])} | "
            f"{_num(None if c['plain_mfu'] is None else 100 * c['plain_mfu'], '.1f', '%')} | "
            f"{_num(None if c['studio_mfu'] is None else 100 * c['studio_mfu'], '.1f', '%')} | "
            f"{'yes' if c['same_tokens'] else 'no'} | {_num(c.get('mean_loss_plain'), '.4f')} | "
            f"{_num(c.get('mean_loss_studio'), '.4f')} |")
    capped = [r for r in report["rows"] if r["cap_bytes"]]
    if capped:
        lines += ["", f"Memory cap (RTX 4060 stand-in): torch.cuda.set_per_process_memory_fraction"
                      f"((cap − CUDA context) ÷ card memory)", "",
                  "| model | path | cap GiB | result | steps | tokens/s | peak VRAM GiB |",
                  "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
        for r in capped:
            result = {"ok": "trained", "oom": "out of memory"}.get(r["status"], r["status"])
            lines.append(f"| {r['model']} | {r['path']} | {r['cap_bytes'] / GIB:g} | {result} | "
                         f"{r.get('steps_completed', 0)}/{r.get('steps_expected', '—')} | "
                         f"{_num(r.get('tokens_per_second'), ',.0f')} | {_gib(r.get('peak_bytes'))} |")
    return "\n".join(lines)


def run_all(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    device = "cpu" if args.cpu_smoke else "cuda"
    if args.cpu_smoke:
        models, warmup, steps, seq, batch, cap = (SMOKE_MODEL,), SMOKE_WARMUP, SMOKE_STEPS, SMOKE_SEQ, BATCH, True
    else:
        models, seq, batch, cap = args.models, args.seq, args.batch, not args.no_cap
        warmup, steps = (QUICK_WARMUP, QUICK_STEPS) if args.quick else (args.warmup, args.steps)
    todo = cases(models, cap=cap, seq=seq, batch=batch)
    if args.cpu_smoke:
        todo = [dataclasses.replace(c, model=SMOKE_MODEL) for c in todo]
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    rows, flops = [], {}
    for model in dict.fromkeys(c.model for c in todo):
        folder = prepare_demo(work / "demo") if model == SMOKE_MODEL else prepare_shape(model, work / model,
                                                                                         args.timeout)
        shape = model_config(folder)
        flops[model] = model_flops_per_token(shape, seq)
        data = write_text_rows(work / f"{model}-seq{seq}-b{batch}-{warmup + steps}.jsonl",
                               (warmup + steps) * batch, seq, shape["vocab_size"])
        for case in (c for c in todo if c.model == model):
            if case.cap_bytes and device != "cuda":
                result = {"status": "skipped", "error": "the memory cap needs a CUDA GPU"}
            else:
                result = run_case_in_child(case, folder, data, warmup, steps, device, args.timeout)
            rows.append({**dataclasses.asdict(case), **result})
            print(f"{case.label}: {result.get('status')}, "
                  f"{_num(result.get('tokens_per_second'), ',.1f')} tokens/s, "
                  f"peak {_gib(result.get('peak_bytes'))} GiB", file=sys.stderr, flush=True)
    info = machine(rows, device)
    add_mfu(rows, flops, None if info.get("peak_bf16_tflops") is None else info["peak_bf16_tflops"] * 1e12)
    return {
        "machine": info,
        "command": "python benchmarks/gpu_speed.py" + ("" if not argv else " " + shlex.join(argv)),
        "settings": {"seq": seq, "batch": batch, "rank": RANK, "warmup": warmup, "steps": steps,
                     "optim": "paged_adamw_8bit" if device == "cuda" else "adamw_torch (CPU)",
                     "device": device, "cap_bytes": CAP_BYTES if cap else None},
        "targets": {"speedup_at_least": TARGET_SPEEDUP, "vram_ratio_at_most": TARGET_VRAM_RATIO},
        "rows": rows,
        "comparisons": comparisons(rows),
    }


# ------------------------------------------------------------------------------ the command line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the cases and FLOPs per token; no GPU needed")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_WARMUP} warm-up + {QUICK_STEPS} measured steps")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the whole pipeline on the CPU with the tiny demo model (a code check, not a benchmark)")
    parser.add_argument("--models", type=lambda t: tuple(p.strip() for p in t.split(",") if p.strip()),
                        default=MODELS)
    parser.add_argument("--seq", type=int, default=SEQ)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--steps", type=int, default=STEPS, help="measured steps after the warm-up")
    parser.add_argument("--no-cap", action="store_true", help="skip the 8 GB cap cases")
    parser.add_argument("--work-dir", type=Path, help="where models and data are built (default: a temp folder; "
                                                      "GPU runs keep theirs in <tmp>/studio-speed-models)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help=f"also profile {PROFILE_STEPS} steps after the warm-up of each case (torch.profiler) "
                             "and write each case's busiest operators to DIR/<case>.txt")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--build-model", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.build_model:
        _build_model_here(args.build_model, args.model_dir)
        return 0
    if args.run_case:
        case = Case(**json.loads(args.run_case))
        result = run_case(case, args.model_dir, args.data_file, args.warmup, args.steps, args.device)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    unknown = sorted(set(args.models) - set(bundled_shapes()))
    if unknown and not args.cpu_smoke:
        parser.error(f"unknown model shapes {unknown}; known: {', '.join(bundled_shapes())}")
    if args.dry_run:
        todo = cases(args.models, cap=not args.no_cap, seq=args.seq, batch=args.batch)
        warmup, steps = (QUICK_WARMUP, QUICK_STEPS) if args.quick else (args.warmup, args.steps)
        print(f"{len(todo)} cases, each {warmup} warm-up + {steps} measured steps in its own process (dry run)\n")
        print("| case | matmul parameters | model FLOPs per token |\n| --- | ---: | ---: |")
        rows = []
        for case in todo:
            shape = json.loads(bundled_shapes()[case.model].read_text(encoding="utf-8"))
            row = {**dataclasses.asdict(case), "matmul_parameters": matmul_parameters(shape),
                   "flops_per_token": model_flops_per_token(shape, case.seq)}
            rows.append(row)
            print(f"| {case.label} | {row['matmul_parameters']:,} | {row['flops_per_token']:,} |")
        _write(args.output, {"dry_run": True, "rows": rows})
        return 0

    if args.profile:
        os.environ[PROFILE_ENV] = str(args.profile.resolve())  # read by each case's child process
    if args.cpu_smoke:
        with tempfile.TemporaryDirectory(prefix="gpu-speed-smoke-") as scratch:
            args.work_dir = args.work_dir or Path(scratch)
            report = run_all(args, argv)
    else:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU: use --dry-run for the case list, --cpu-smoke for a code check on the CPU, or run "
                  "this on a machine with an NVIDIA GPU", file=sys.stderr)
            return 2
        args.work_dir = args.work_dir or Path(tempfile.gettempdir()) / "studio-speed-models"
        report = run_all(args, argv)
    _write(args.output, report)
    print(markdown(report))
    trained = [r for r in report["rows"] if not r["cap_bytes"]]
    return 0 if trained and all(r["status"] == "ok" for r in trained) else 1


def _write(path: Path | None, data: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
