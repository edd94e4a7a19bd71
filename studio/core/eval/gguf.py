"""A GGUF file as an eval column: its own weights and its own tokenizer and chat template, read back with
transformers' GGUF loader (dequantised to float32 on the CPU, the 16-bit dtype on a GPU).

This checks what the file holds — the merged weights as written, the template it carries — not llama.cpp's
own inference; llama.cpp's kernels (and q8_0 arithmetic done in 8-bit) can still differ a little.
"""

from __future__ import annotations

from pathlib import Path

from studio.core.chat.model import ChatModel
from studio.core.models.source import ModelLoadError

READ_BY = "transformers' GGUF loader (the file's weights and tokenizer; not llama.cpp)"


def check_gguf_file(path: Path) -> None:
    """ModelLoadError naming the file unless it is a whole GGUF file: its header, metadata and tensor table read
    back and every tensor's data inside the file. gguf's reader maps the file and reads no tensor data, so this
    costs milliseconds even for gigabytes, and runs before anything is generated (a file cut short inside its
    header otherwise ends in a `struct.error` once the studio's columns are done)."""
    from gguf import GGUFReader

    path = Path(path)
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ModelLoadError(f"{path}: not a .gguf file")
    try:
        reader = GGUFReader(path)
    except Exception as error:  # struct.error, ValueError, IndexError...: numpy's words for a header cut short
        raise ModelLoadError(f"{path}: not a readable GGUF file (cut short or damaged: gguf's reader stopped with "
                             f"{type(error).__name__})") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if int(tensor.data_offset) + int(tensor.n_bytes) > size:
            raise ModelLoadError(f"{path}: not a readable GGUF file (cut short or damaged: tensor {tensor.name} "
                                 "runs past the end of the file)")


def load_gguf_chat(path: Path) -> ChatModel:
    """A ChatModel (no adapters) answering with the GGUF file's weights and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.data.tokens import ensure_chat_template

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such GGUF file")
    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path}: transformers cannot read this GGUF file: {first}") from None
    ensure_chat_template(tokenizer)
    if cuda:
        model = model.to("cuda")
    model.eval()
    return ChatModel(model=model, tokenizer=tokenizer, base_name=str(path), loaded_as=f"GGUF, read by {READ_BY}")
