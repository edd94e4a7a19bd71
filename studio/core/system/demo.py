"""The offline demo: a tiny Llama-architecture model, its BPE tokenizer and a 10-conversation dataset.

Everything is built locally from the text in `resources/demo/`, so the first run, the tests and
CI never need the Hugging Face Hub. The model is randomly initialised (it knows nothing), yet a
short QLoRA run on the demo dataset makes it answer the demo questions word for word: that is
what the demo shows and what the end-to-end tests check.

Torch, transformers and tokenizers are imported inside `build_demo` only, so importing this
module (and checking that the demo is already built) stays instant.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio.core.system.paths import resource_path, user_data_dir

DEMO_VERSION = 3
"""Bump whenever the built files change; an older demo on disk is then rebuilt."""

SEED = 1234
MARKER_FILE = "demo.json"

BOS_TOKEN = "<|begin_of_text|>"
END_OF_TEXT_TOKEN = "<|end_of_text|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
PAD_TOKEN = "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS_TOKEN, END_OF_TEXT_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN, PAD_TOKEN]

# Llama 3's pre-tokenizer pattern: words keep their leading space, digits split in groups of
# at most three, so "Fiber 500" and "08:00" tokenise the way they do for real Llama 3 models.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# A multiple of 64 keeps the embedding matrix friendly to every kernel. The corpus is small, so
# the last merges are words seen once; that still makes every demo word a single token or two.
_VOCAB_SIZE = 1024
_MAX_LENGTH = 512

# Llama 3's chat format. Content is not trimmed (unlike Meta's template) so that a rendered
# conversation holds the dataset text byte for byte. `{% generation %}` marks what the assistant
# says, so `apply_chat_template(..., return_assistant_tokens_mask=True)` and TRL's
# `assistant_only_loss=True` can find the tokens to train on.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# Every linear layer's sizes are multiples of 64, as bitsandbytes' 4-bit blocks require; the
# model stays under 2 MB so that a QLoRA run on a 2-core CPU takes seconds.
_MODEL_DIMS = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    # Llama's default 0.02 suits wide models. At width 128 the tied, frozen output embedding
    # would then cap every logit near 2.5, so even a perfectly trained adapter could not make
    # the model confident: the loss would stall near 4.5 and sampled replies would be noise.
    "initializer_range": 0.1,
}

# bitsandbytes' NF4 code book (`bitsandbytes.functional.get_4bit_type("nf4")`) and block size.
_NF4_CODES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
_NF4_BLOCK_SIZE = 64


@dataclass(frozen=True)
class DemoAssets:
    """Where the built demo lives."""

    root: Path
    model_dir: Path
    dataset_path: Path
    config_path: Path

    @classmethod
    def at(cls, root: Path) -> DemoAssets:
        """The demo layout under `root`, whether or not it has been built."""
        return cls(
            root=root,
            model_dir=root / "model",
            dataset_path=root / "dataset.jsonl",
            config_path=root / "demo.toml",
        )


def default_demo_dir() -> Path:
    """The folder the app builds its demo into on first run."""
    return user_data_dir() / "demo"


def demo_resource_dir() -> Path:
    """The shipped demo sources: `dataset.jsonl` and the tokenizer's `corpus.txt`."""
    folder = resource_path("demo")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: demo resources are missing; reinstall Finetune Studio")
    return folder


def load_demo_conversations() -> list[dict]:
    """The demo dataset's records, each `{"messages": [user turn, assistant turn]}`."""
    path = demo_resource_dir() / "dataset.jsonl"
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def is_demo_built(root: Path) -> bool:
    """True when `root` holds a complete demo of the current `DEMO_VERSION`."""
    assets = DemoAssets.at(root)
    try:
        marker = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("demo_version") == DEMO_VERSION
        and (assets.model_dir / "config.json").is_file()
        and assets.dataset_path.is_file()
    )


def build_demo(
    output_dir: Path | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoAssets:
    """Build the demo model and dataset into `output_dir` (default: `default_demo_dir()`).

    Returns at once when a current demo is already there, unless `force`. The model and dataset
    are written to a staging folder and moved into place before the `demo.json` marker is
    written, so an interrupted build is never taken for a finished one. Other files in the
    folder (such as `demo.toml`) are left alone. The result is the same on every machine.
    """
    root = Path(output_dir) if output_dir is not None else default_demo_dir()
    assets = DemoAssets.at(root)
    if not force and is_demo_built(root):
        return assets

    def report(message: str) -> None:
        if progress is not None:
            progress(message)

    root.mkdir(parents=True, exist_ok=True)
    # Leftovers of a build that was killed; concurrent builds into one folder are not supported.
    for leftover in root.glob(".build-*"):
        shutil.rmtree(leftover, ignore_errors=True)

    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        resources = demo_resource_dir()
        report("Training tokenizer…")
        tokenizer = _build_tokenizer(resources / "corpus.txt")
        report("Building model…")
        model = _build_model(tokenizer)
        report("Writing model…")
        _save_quietly(model, tokenizer, staging / "model")
        report("Copying dataset…")
        shutil.copyfile(resources / "dataset.jsonl", staging / "dataset.jsonl")

        (root / MARKER_FILE).unlink(missing_ok=True)
        if assets.model_dir.exists():
            shutil.rmtree(assets.model_dir)
        os.replace(staging / "model", assets.model_dir)
        os.replace(staging / "dataset.jsonl", assets.dataset_path)
        _write_marker(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report("Demo ready.")
    return assets


def _write_marker(root: Path) -> None:
    """Write `demo.json` atomically: its presence is what says the demo is complete."""
    marker = root / MARKER_FILE
    partial = marker.with_suffix(".json.partial")
    partial.write_text(json.dumps({"demo_version": DEMO_VERSION}) + "\n", encoding="utf-8")
    os.replace(partial, marker)


def _save_quietly(model, tokenizer, folder: Path) -> None:
    """Save model and tokenizer without transformers' tqdm bar, which would garble CLI output."""
    from transformers.utils import logging as hf_logging

    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _build_tokenizer(corpus: Path):
    """Train a byte-level BPE tokenizer on `corpus` and wrap it with Llama 3's special tokens."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train([str(corpus)], trainer)
    # Like Llama 3, plain `tokenizer(text)` starts with BOS; the chat template writes its own
    # BOS and `apply_chat_template` encodes without special tokens, so chats get exactly one.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, backend.token_to_id(BOS_TOKEN))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOT_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=_MAX_LENGTH,
        # The default clean-up turns " ." into "." on decode, which breaks the exact round trip.
        clean_up_tokenization_spaces=False,
    )


def _build_model(tokenizer):
    """A randomly initialised `LlamaForCausalLM` sized for `tokenizer`, the same bytes every time."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    end_of_text_id = tokenizer.convert_tokens_to_ids(END_OF_TEXT_TOKEN)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eot_id,
        pad_token_id=tokenizer.pad_token_id,
        **_MODEL_DIMS,
    )
    # A private RNG stream: seeding must not disturb the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
    _snap_linear_weights_to_nf4(model)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eot_id, end_of_text_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def _snap_linear_weights_to_nf4(model) -> None:
    """Round every decoder linear weight to the value NF4 quantisation would give it.

    In a random model the exact weights are all there is, so NF4's ~10% rounding error would
    make an adapter trained on the 4-bit model a different function on the full-precision one:
    merged and exported demo models then miss some answers. On this grid, loading in 4 bits
    changes the weights by under 0.3% (double quantisation of the block scales), and an
    adapter behaves the same on the 4-bit, 16-bit and 32-bit model.
    """
    import torch

    codes = torch.tensor(_NF4_CODES)
    with torch.no_grad():
        for layer in model.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    blocks = module.weight.reshape(-1, _NF4_BLOCK_SIZE)
                    absmax = blocks.abs().amax(dim=1, keepdim=True)
                    nearest = (blocks / absmax).unsqueeze(-1).sub(codes).abs().argmin(dim=-1)
                    module.weight.copy_((codes[nearest] * absmax).reshape(module.weight.shape))


def make_nf4_sensitive(model_dir: Path, *, factor: float = 10.0, seed: int = 0) -> None:
    """Give every decoder linear weight of the model in `model_dir` one outlier per NF4 block, in place.

    NF4 scales each block of 64 weights by its largest magnitude, so one weight `factor` times larger
    pushes the other 63 onto a coarse grid: the 4-bit model is then a clearly different function
    from the 16-bit one, as a real pretrained model's is (the demo model is snapped onto the grid so
    that it is not). Tests and benchmarks train an adapter on the 4-bit copy of such a model to
    check that chat, merge and exports keep what the adapter learned on the 4-bit weights.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, trust_remote_code=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    blocks = module.weight.view(-1, _NF4_BLOCK_SIZE)
                    pick = torch.randint(0, _NF4_BLOCK_SIZE, (blocks.shape[0],), generator=generator)
                    blocks[torch.arange(blocks.shape[0]), pick] *= factor
    _save_quietly(model, None, Path(model_dir))
