"""Where a base model comes from: a local folder, the local Hugging Face cache, a Hub download, or
one of the model shapes shipped in `resources/model_configs/` (enough for a VRAM estimate).

Everything here is Qt-free; the Config tab runs the slow parts (download, linear-layer detection)
in a worker thread. Hub errors a user can fix (gated model, no token, no network, a typo in the id)
become a :class:`ModelSourceError` whose message says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.system.paths import hf_cache_dir, looks_like_hub_id, resource_path


class ModelLoadError(ValueError):
    """A model or adapter the user named cannot be found or read."""


BUNDLED_SHAPES_DIR = resource_path("model_configs")

# Files a training run never needs: original checkpoints, other frameworks' weights, exports.
_IGNORED_FILES = ["original/*", "*.pth", "consolidated*", "*.gguf", "*.onnx", "*.onnx_data", "onnx/*",
                  "*.msgpack", "*.h5", "flax_model*", "tf_model*", "openvino/*", "*.ot", "coreml/*"]


class ModelSourceError(Exception):
    """A model that cannot be found, read or downloaded, with a message saying what to do."""


# --------------------------------------------------------------------------------------- the HF cache




@dataclass(frozen=True)
class CachedModel:
    """A model repository found in the local Hugging Face cache."""

    repo_id: str
    size_bytes: int
    snapshot_path: Path | None
    """The newest snapshot folder (the one `main` points to when there is such a ref)."""
    has_weights: bool
    last_modified: float

    @property
    def size_text(self) -> str:
        from studio.core.system.units import format_bytes

        return format_bytes(self.size_bytes, style='memory')


def list_cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Model repositories in the local HF cache that have a config.json, largest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    folder = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    try:
        info = scan_cache_dir(folder)
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revisions = sorted(repo.revisions, key=lambda rev: ("main" in rev.refs, rev.last_modified), reverse=True)
        snapshot = next((rev for rev in revisions if any(f.file_name == "config.json" and f.file_path.parent ==
                                                           rev.snapshot_path for f in rev.files)), None)
        if snapshot is None:
            continue  # a tokenizer-only or dataset-like repo: nothing to fine-tune
        names = {f.file_name for f in snapshot.files}
        models.append(CachedModel(
            repo_id=repo.repo_id,
            size_bytes=repo.size_on_disk,
            snapshot_path=snapshot.snapshot_path,
            has_weights=any(n.endswith((".safetensors", ".bin")) for n in names),
            last_modified=repo.last_modified,
        ))
    return sorted(models, key=lambda m: (-m.size_bytes, m.repo_id))


def cached_snapshot(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """The cached snapshot folder of a Hub id, if its config.json is in the cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if not looks_like_hub_id(repo_id):
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json",
                                       cache_dir=str(cache_dir if cache_dir is not None else hf_cache_dir()))
    except Exception:  # noqa: BLE001 - an odd id or a broken cache means "not cached"
        return None
    return Path(found).parent if isinstance(found, str) else None




def missing_local_model(name_or_path: str) -> str | None:
    """Why `name_or_path` names no model folder, when it is not a Hub id (`looks_like_hub_id`, the one rule); None
    for a model folder or a Hub id (those are fetched, or read from the cache, when loaded: `unreachable_hub_model`
    says when they cannot be)."""
    path = Path(name_or_path).expanduser()
    if not name_or_path or (not path.exists() and looks_like_hub_id(name_or_path)):
        return None
    if not path.exists():
        bare_name = "/" not in name_or_path.replace("\\", "/") and not name_or_path.startswith(("~", "."))
        # A bare name ("gpt2") may have been meant for the Hub, whose ids read org/name: say why it is not one.
        return "no such folder, and not a Hub id (those read org/name)" if bare_name else "no such folder"
    if not path.is_dir():
        return "a file, not a model folder"
    if not (path / "config.json").is_file():
        return "not a model folder (no config.json in it)"
    return None


def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be asked for files now (offline mode set, or no connection), or None."""
    import os

    from studio.core.data.sources import hub_is_reachable

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name} is set"
    if not hub_is_reachable():
        return f"no connection to {os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}"
    return None


def unreachable_hub_model(name_or_path: str) -> str | None:
    """Why a Hub id cannot be loaded on this machine now (not in the HF cache, and the Hub unreachable), or None
    (a local path, a cached model, or a reachable Hub). Asked before a run folder exists: otherwise the run loads
    the model, fails on the network and ends as a crashed run."""
    if not looks_like_hub_id(name_or_path) or cached_snapshot(name_or_path) is not None:
        return None
    if (why := hub_unreachable_reason()) is None:
        return None
    return (f"not in the Hugging Face cache ({hf_cache_dir()}) and the Hub cannot be reached ({why}); download it "
            f"first with `hf download {name_or_path}` (or the Config tab's Download button) where the Hub can be "
            "reached, or give a model folder")


# --------------------------------------------------------------------------------------- config.json


@dataclass(frozen=True)
class ModelConfigSource:
    """A model's config.json and where it was read from."""

    config: dict[str, Any]
    origin: str  # "folder" | "cache" | "bundled"
    path: Path
    name: str

    @property
    def description(self) -> str:
        return {
            "folder": f"config.json from {self.path.parent}",
            "cache": "config.json from the Hugging Face cache",
            "bundled": f"bundled {self.path.stem} shape (the model is not downloaded yet)",
        }[self.origin]


def bundled_shapes() -> dict[str, Path]:
    """The shipped shape configs by short name, e.g. 'llama-3.1-8b'."""
    return {path.stem: path for path in sorted(BUNDLED_SHAPES_DIR.glob("*.json"))}


def _normalised_id(repo_id: str) -> str:
    """'meta-llama/Llama-3.1-8B-Instruct' and 'meta-llama/Llama-3.1-8B' share a shape."""
    name = repo_id.strip().lower()
    for suffix in ("-instruct", "-chat", "-it", "-base"):
        name = name.replace(suffix, "")
    return name


def bundled_shape_for(name_or_id: str) -> Path | None:
    """A shipped shape by its short name or by the Hub id it was published under (instruct variants included)."""
    shapes = bundled_shapes()
    key = name_or_id.strip().lower()
    if key in shapes:
        return shapes[key]
    wanted = _normalised_id(name_or_id)
    for path in shapes.values():
        try:
            published = json.loads(path.read_text(encoding="utf-8")).get("_name_or_path", "")
        except (OSError, ValueError):
            continue
        if published and _normalised_id(published) == wanted:
            return path
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelSourceError(f"{path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise ModelSourceError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelSourceError(f"{path}: expected a JSON object")
    return data


def find_model_config(name_or_path: str) -> ModelConfigSource:
    """Read a model's config.json without the network: a local folder (or a config.json file), the
    HF cache, or a bundled shape matching the name. Raises ModelSourceError when none has it."""
    text = name_or_path.strip()
    if not text:
        raise ModelSourceError("no model chosen")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".json":
        return ModelConfigSource(_read_json(path), "folder", path, path.parent.name or path.stem)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelSourceError(f"{path}: no config.json in this folder (is it a Hugging Face model folder?)")
        return ModelConfigSource(_read_json(config), "folder", config, path.name)
    snapshot = cached_snapshot(text)
    if snapshot is not None:
        return ModelConfigSource(_read_json(snapshot / "config.json"), "cache", snapshot / "config.json", text)
    bundled = bundled_shape_for(text)
    if bundled is not None:
        return ModelConfigSource(_read_json(bundled), "bundled", bundled, bundled.stem)
    if looks_like_hub_id(text):
        raise ModelSourceError(f"{text} is not in the local Hugging Face cache yet: download it first")
    raise ModelSourceError(f"{text}: no such folder, and not a Hub id such as org/model")
