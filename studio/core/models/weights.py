"""One rule for every load of weights — a base, an adapter, a merged model: safetensors, or pickles only with the
user's opt-in.

A pickle (`pytorch_model.bin`, `adapter_model.bin`, `*.pt`…) is a program: unpickling it can run any code it names.
torch's `weights_only` loader refuses most such files, but it is a filter over a code path, and a refusal there used
to end in an `UnpicklingError` traceback after the studio had already chosen to read the file. So a file is judged
here, by its name, before any library opens it: a folder with safetensors weights loads (transformers is then told
`use_safetensors=True`, PEFT finds the safetensors file first); a folder whose weights are pickles only is refused,
naming the file and the command that converts it once (`finetune-studio convert`), unless the user allowed pickles
(`model.allow_pickle` in a run config, `--allow-pickle` on the command line).

The trainer's own optimizer and scheduler state in checkpoints the studio wrote is not a model's weights and is not
judged here: transformers reads it on resume, from a folder this studio made.
"""

from __future__ import annotations

from pathlib import Path

from studio.core.models.source import ModelLoadError

PICKLE_SETTING = "model.allow_pickle"
PICKLE_FLAG = "--allow-pickle"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight files read with pickle, which can run code when loaded."""

CONVERT_COMMAND = "finetune-studio convert"


class PickleWeightsRefused(ModelLoadError):
    """The weights are pickle files only, and the user did not allow pickles."""


def safetensors_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(".safetensors"))


def pickle_weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(PICKLE_SUFFIXES))


def local_weights_folder(name_or_path: str | Path) -> Path | None:
    """The folder a load would read weights from: the local folder, or the cached snapshot of a Hub id (None: a Hub
    id not downloaded yet, which transformers then fetches with `use_safetensors=True`)."""
    from studio.core.models.source import cached_snapshot

    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return path
    return cached_snapshot(str(name_or_path))


def pickle_refusal(file: Path, folder: Path, *, opt_in: str | None = PICKLE_FLAG) -> str:
    """The one line a refused pickle gets: the file, why, the command that converts it, and the opt-in (if the
    reader has one: the GGUF writer reads safetensors alone)."""
    convert = f"`{CONVERT_COMMAND} {folder} --allow-pickle`"
    allow = f", or allow pickles with {opt_in}" if opt_in else ""
    return (f"{file}: pickle weights are not loaded (a pickle can run code); convert them once to safetensors with "
            f"{convert}{allow}")


def check_weights(name_or_path: str | Path, *, allow_pickle: bool, opt_in: str | None = PICKLE_FLAG,
                  require: bool = True) -> None:
    """Refuse, naming the file, weights that are pickle files only unless pickles are allowed.

    `require`: a local folder with no weights at all is refused too (a cached snapshot may lack them until the load
    downloads them). `opt_in` is how this caller's user allows pickles, for the message (None: no way, convert)."""
    folder = local_weights_folder(name_or_path)
    if folder is None or safetensors_files(folder):
        return
    pickles = pickle_weight_files(folder)
    if pickles:
        if not allow_pickle:
            raise PickleWeightsRefused(pickle_refusal(pickles[0], folder, opt_in=opt_in))
        return
    if require and Path(str(name_or_path)).expanduser().is_dir():
        raise ModelLoadError(f"{folder}: holds no model weights (no .safetensors file in it)")


def use_safetensors_kwarg(allow_pickle: bool) -> bool | None:
    """transformers' `use_safetensors`: True (never a pickle, not even one fetched from the Hub) unless pickles are
    allowed, then None (safetensors first, the pickle only where there is none)."""
    return None if allow_pickle else True


def unpickling_refused(where: str | Path, error: BaseException) -> ModelLoadError:
    """With pickles allowed, torch's weights-only loader still refuses a pickle that names code (an `exec`, an
    `os.system`): one line for it, not an UnpicklingError traceback."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # torch's message carries terminal colour codes
    named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    reason = (f"it calls {named[1]}, which is code, not a tensor" if named else
              text.splitlines()[0] if text else type(error).__name__)
    return ModelLoadError(f"{where}: its pickle weights are not plain weights; torch's weights-only loader refused "
                          f"them ({reason})")
