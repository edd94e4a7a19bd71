"""`finetune-studio convert`: a safetensors copy of a model or adapter folder whose weights are pickle files.

The studio loads pickle weights only with the user's opt-in (core.models.weights); converting once, with the same
opt-in, gives a folder every command loads without it. The copy is a new folder (never over the user's files): the
other files are copied as they are and the weights are read with torch's weights-only loader — a model through
transformers (which handles shards and tied weights, then `save_pretrained` writes safetensors), an adapter file by
file (`adapter_model.bin` → `adapter_model.safetensors`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from studio.core.models.source import ModelLoadError
from studio.core.models.weights import PICKLE_FLAG, pickle_weight_files, safetensors_files

PICKLE_INDEX_SUFFIX = ".bin.index.json"
"""The index of sharded pickle weights: it names the .bin files, so it is not copied (save_pretrained writes its
own safetensors index)."""


def default_output(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}-safetensors")


def convert_to_safetensors(folder: Path, output: Path | None = None, *, allow_pickle: bool,
                           trust_remote_code: bool = False, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Write the safetensors copy of `folder` to `output` (default: FOLDER-safetensors beside it); returns it.

    Raises ModelLoadError (one line) for everything the user can act on: no opt-in, not a model or adapter folder,
    nothing to convert, an output that exists, a file torch's weights-only loader refuses."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such folder")
    adapter = (folder / "adapter_config.json").is_file()
    if not adapter and not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: neither a model folder (config.json) nor an adapter folder "
                             "(adapter_config.json)")
    if safetensors_files(folder):
        raise ModelLoadError(f"{folder}: its weights are safetensors already ({safetensors_files(folder)[0].name}); "
                             "nothing to convert")
    pickles = pickle_weight_files(folder)
    if not pickles:
        raise ModelLoadError(f"{folder}: holds no weights to convert (no .bin, .pt or .pth file)")
    if not allow_pickle:
        raise ModelLoadError(f"{pickles[0]}: converting reads this pickle file (torch's weights-only loader), and a "
                             f"pickle can run code: pass {PICKLE_FLAG} if you trust where the folder came from")
    output = default_output(folder) if output is None else Path(output).expanduser()
    if output.exists() or output.is_symlink():
        raise ModelLoadError(f"{output}: already exists; convert writes a new folder and never over files (give "
                             "--output a new name)")
    if not output.parent.is_dir():
        raise ModelLoadError(f"{output.parent}: no such folder")
    # A hidden folder beside the output, renamed into place when complete: a failure leaves no half copy.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        for item in folder.iterdir():
            if item in pickles or item.name.endswith(PICKLE_INDEX_SUFFIX):
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name, symlinks=True)
            else:
                shutil.copy2(item, staging / item.name)
        if adapter:
            _convert_adapter(pickles, staging, progress)
        else:
            _convert_model(folder, staging, output, trust_remote_code, progress)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _weights_only_load(file: Path) -> dict[str, Any]:
    import pickle

    import torch

    from studio.core.models.weights import unpickling_refused

    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as error:
        raise unpickling_refused(file, error) from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"{file}: does not hold a plain name → tensor mapping")
    return data


def _convert_adapter(pickles: list[Path], staging: Path, progress: Callable[[str], None]) -> None:
    from safetensors.torch import save_file

    for file in pickles:
        progress(f"Converting {file.name}")
        tensors = _weights_only_load(file)
        # safetensors stores no shared storage: each tensor is written on its own.
        save_file({name: t.detach().contiguous().clone() for name, t in tensors.items()},
                  str(staging / f"{Path(file.name).stem}.safetensors"), metadata={"format": "pt"})


def _convert_model(folder: Path, staging: Path, output: Path, trust_remote_code: bool,
                   progress: Callable[[str], None]) -> None:
    from studio.core.models.trained_base import load_causal_lm

    progress(f"Reading {folder} (pickle weights, with torch's weights-only loader)")
    model = load_causal_lm(str(folder), trust_remote_code=trust_remote_code, allow_pickle=True,
                           setting="--trust-remote-code", dtype="auto")
    progress(f"Writing safetensors to {output}")
    model.save_pretrained(str(staging))
