"""Where a base model comes from: a local folder, the local Hugging Face cache, a Hub download, or
one of the model shapes shipped in `resources/model_configs/` (enough for a VRAM estimate).

Everything here is Qt-free; the Config tab runs the slow parts (download, linear-layer detection)
in a worker thread. Hub errors a user can fix (gated model, no token, no network, a typo in the id)
become a :class:`ModelSourceError` whose message says what to do.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.core.paths import resource_path

BUNDLED_SHAPES_DIR = resource_path("model_configs")

# Files a training run never needs: original checkpoints, other frameworks' weights, exports.
_IGNORED_FILES = ["original/*", "*.pth", "consolidated*", "*.gguf", "*.onnx", "*.onnx_data", "onnx/*",
                  "*.msgpack", "*.h5", "flax_model*", "tf_model*", "openvino/*", "*.ot", "coreml/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelSourceError(Exception):
    """A model that cannot be found, read or downloaded, with a message saying what to do."""


class DownloadCancelled(ModelSourceError):
    """The user cancelled a download; the files already fetched stay in the cache."""

    def __init__(self, repo_id: str = ""):
        super().__init__(f"Download of {repo_id} cancelled. Start it again to resume where it stopped."
                         if repo_id else "Download cancelled.")


# --------------------------------------------------------------------------------------- the HF cache


def hf_cache_dir() -> Path:
    """The Hub cache folder, read from the environment now (HF_HUB_CACHE, then HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


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
        from studio.core.gpu import format_bytes

        return format_bytes(self.size_bytes)


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


def hub_id_of(name_or_path: str) -> str:
    """The Hub id a model came from: itself for an id, 'org/name' for a snapshot folder of the HF cache
    (`…/models--org--name/snapshots/<revision>`), else the path as given (a model of the user's own)."""
    parts = Path(name_or_path).parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots" and "--" in part[len("models--"):]:
            return part[len("models--"):].replace("--", "/", 1)
    return name_or_path


def looks_like_local_path(text: str) -> bool:
    """A path, not a Hub id: absolute, relative with ./ ../ ~, or more than one slash ('org/name' is an id)."""
    text = text.strip()
    return Path(text).is_absolute() or text.startswith((".", "~")) or text.replace("\\", "/").count("/") > 1


def missing_local_model(name_or_path: str) -> str | None:
    """Why `name_or_path` names no model, when it is (or looks like) a local path; None for a model folder or
    a Hub id (those are fetched, or read from the cache, when loaded)."""
    path = Path(name_or_path).expanduser()
    if not name_or_path or not (path.exists() or looks_like_local_path(name_or_path)):
        return None
    if not path.exists():
        return "no such folder"
    if not path.is_dir():
        return "a file, not a model folder"
    if not (path / "config.json").is_file():
        return "not a model folder (no config.json in it)"
    return None


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text.strip())) and not Path(text).expanduser().exists()


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


# --------------------------------------------------------------------------------------- linear layers


@dataclass(frozen=True)
class LinearModules:
    """The names PEFT can target in a model, grouped for the Config tab's shortcuts."""

    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.attention + self.mlp + self.other


def linear_modules_from_config(config: dict[str, Any], *, trust_remote_code: bool = False) -> LinearModules:
    """Instantiate the architecture on the meta device (no memory, no weights) and list its linear layers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ModelSourceError("config.json has no model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **values)
    except ValueError as error:
        raise ModelSourceError(f"unknown architecture {model_type!r}: {error}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    return _group_linear_modules(model)


def _layer_names_cache() -> Path:
    from studio.core.paths import user_data_dir

    return user_data_dir() / "cache" / "layer-names.json"


def _layer_names_key(config: dict[str, Any], trust_remote_code: bool) -> str:
    import hashlib

    payload = json.dumps({"config": config, "trust_remote_code": trust_remote_code}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached_linear_modules(name_or_path: str, *, trust_remote_code: bool = False) -> LinearModules | None:
    """The layer names found earlier for a model with this very config.json, without importing torch: the
    first read after a start imports PyTorch and transformers, which on a busy 2-core machine took minutes."""
    try:
        source = find_model_config(name_or_path)
        entry = json.loads(_layer_names_cache().read_text(encoding="utf-8")).get(
            _layer_names_key(source.config, trust_remote_code))
    except (ModelSourceError, OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict):
        return None
    try:
        return LinearModules(*(tuple(str(n) for n in entry[k]) for k in ("attention", "mlp", "other")))
    except (KeyError, TypeError):
        return None


def _remember_linear_modules(config: dict[str, Any], trust_remote_code: bool, modules: LinearModules) -> None:
    cache = _layer_names_cache()
    try:
        known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        if not isinstance(known, dict):
            known = {}
        known[_layer_names_key(config, trust_remote_code)] = {
            "attention": list(modules.attention), "mlp": list(modules.mlp), "other": list(modules.other)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = cache.with_suffix(".tmp")
        staging.write_text(json.dumps(known), encoding="utf-8")
        os.replace(staging, cache)
    except (OSError, ValueError):
        pass  # a cache: the next start reads the names again


def detect_linear_modules(name_or_path: str, *, trust_remote_code: bool = False) -> LinearModules:
    """The linear layer names of a local/cached/bundled model, read from its config.json only (and remembered,
    see cached_linear_modules)."""
    cached = cached_linear_modules(name_or_path, trust_remote_code=trust_remote_code)
    if cached is not None:
        return cached
    source = find_model_config(name_or_path)
    modules = _read_linear_modules(source, trust_remote_code)
    if not (trust_remote_code and "auto_map" in source.config):  # a model's own code may change under one config
        _remember_linear_modules(source.config, trust_remote_code, modules)
    return modules


def _read_linear_modules(source: ModelConfigSource, trust_remote_code: bool) -> LinearModules:
    if source.origin != "bundled" and trust_remote_code and "auto_map" in source.config:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        hf_config = AutoConfig.from_pretrained(str(source.path.parent), trust_remote_code=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=True)
        return _group_linear_modules(model)
    return linear_modules_from_config(source.config, trust_remote_code=trust_remote_code)


def _group_linear_modules(model: Any) -> LinearModules:
    import torch

    head = model.get_output_embeddings()
    groups: dict[str, list[str]] = {"attention": [], "mlp": [], "other": []}
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        parent, _, leaf = path.rpartition(".")
        parent = parent.lower()
        if "attn" in parent or "attention" in parent:
            group = "attention"
        elif "mlp" in parent or "feed_forward" in parent or "ffn" in parent:
            group = "mlp"
        else:
            group = "other"
        if leaf not in groups[group]:
            groups[group].append(leaf)
    return LinearModules(tuple(groups["attention"]), tuple(groups["mlp"]), tuple(groups["other"]))


# --------------------------------------------------------------------------------------- Hub download


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes written so far out of the bytes expected (0 while the file list is being fetched)."""

    repo_id: str
    done_bytes: int
    total_bytes: int
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float | None:
        return self.done_bytes / self.total_bytes if self.total_bytes else None


def _progress_bar_class(report: Callable[[str, int, int], None], should_cancel: Callable[[], bool]) -> type:
    """A tqdm class for `snapshot_download(tqdm_class=...)` that reports instead of printing and
    raises DownloadCancelled from the downloading threads when the user asks to stop."""
    from tqdm.auto import tqdm

    class _ReportingTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()  # the studio shows its own progress bar
            kwargs["disable"] = False
            desc = str(kwargs.get("desc") or "")
            self._role = "files" if desc.startswith(("Fetching", "[dry-run]")) else (
                "bytes" if not desc.startswith("Downloading bytes") else "transfer")
            super().__init__(*args, **kwargs)
            report(self._role, int(self.n), int(self.total or 0))

        def update(self, n: float | None = 1) -> bool | None:
            if should_cancel():
                raise DownloadCancelled()
            shown = super().update(n)
            report(self._role, int(self.n), int(self.total or 0))
            return shown

    return _ReportingTqdm


def describe_hub_error(error: BaseException, repo_id: str) -> str:
    """A message a user can act on, for the Hub errors a download can meet."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        page = f"https://huggingface.co/{repo_id}"
        if get_token() is None:
            return (f"{repo_id} is a gated model and you are not logged in: accept its licence on {page}, then "
                    "run `hf auth login` (or set HF_TOKEN) and download again.")
        return (f"{repo_id} is a gated model and your token has no access yet: accept its licence on {page} "
                "(approval can take a while), then download again.")
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id}: no such revision on the Hub."
    if isinstance(error, RepositoryNotFoundError):
        hint = "" if get_token() else " If it is private, run `hf auth login` or set HF_TOKEN."
        return f"{repo_id}: no such model on the Hugging Face Hub (check the spelling).{hint}"
    chain = [error, error.__cause__, error.__context__]
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain) or "HF_HUB_OFFLINE" in str(error):
        return (f"Cannot download {repo_id}: Hugging Face offline mode is on (HF_HUB_OFFLINE=1) and the model is "
                "not in the local cache. Unset HF_HUB_OFFLINE, or copy the model folder here and pick it.")
    if isinstance(error, LocalEntryNotFoundError) or _is_connection_error(error):
        return (f"Cannot reach the Hugging Face Hub to download {repo_id}: no network connection? Connect and "
                "try again, or pick a model folder or a model already in the cache.")
    if isinstance(error, HfHubHTTPError):
        return f"The Hub refused the download of {repo_id}: {str(error).splitlines()[0]}"
    if isinstance(error, OSError) and error.errno == 28:
        return f"The disk is full while downloading {repo_id} (cache: {hf_cache_dir()})."
    return f"Download of {repo_id} failed: {type(error).__name__}: {error}"


def _is_connection_error(error: BaseException) -> bool:
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)) or type(current).__name__ in (
                "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError"):
            return True
        current = current.__cause__ or current.__context__
    return False


def download_model(
    repo_id: str,
    *,
    progress: Callable[[DownloadProgress], None] | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
    cache_dir: Path | None = None,
    report_interval_s: float = 0.2,
) -> Path:
    """Download a Hub model into the HF cache (weights, config and tokenizer only) and return its
    snapshot folder. Interrupted downloads resume where they stopped. Raises ModelSourceError."""
    from huggingface_hub import HfApi, snapshot_download

    repo_id = repo_id.strip()
    if not _HUB_ID.match(repo_id):
        raise ModelSourceError(f"{repo_id!r} is not a Hub id such as meta-llama/Llama-3.2-1B-Instruct")
    lock = threading.Lock()
    state = {"bytes": 0, "bytes_total": 0, "files": 0, "files_total": 0, "last": 0.0}

    def report(role: str, n: int, total: int) -> None:
        if progress is None or role == "transfer":
            return
        with lock:
            if role == "files":
                state["files"], state["files_total"] = n, total
            else:
                state["bytes"], state["bytes_total"] = n, total
            now = time.monotonic()
            final = role == "files" and total and n >= total
            if not final and now - state["last"] < report_interval_s:
                return
            state["last"] = now
            snapshot = DownloadProgress(repo_id, state["bytes"], state["bytes_total"], state["files"],
                                        state["files_total"])
        progress(snapshot)

    try:
        ignore = list(_IGNORED_FILES)
        revision = None
        if not _offline():
            info = HfApi().model_info(repo_id)
            revision = info.sha
            names = [s.rfilename for s in info.siblings or []]
            if any(n.endswith(".safetensors") for n in names):
                ignore += ["*.bin", "*.pt"]  # the same weights twice in the older format
        if should_cancel():
            raise DownloadCancelled(repo_id)
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else str(hf_cache_dir()),
            ignore_patterns=ignore,
            tqdm_class=_progress_bar_class(report, should_cancel),
        )
    except DownloadCancelled:
        raise DownloadCancelled(repo_id) from None
    except ModelSourceError:
        raise
    except Exception as error:  # noqa: BLE001 - every Hub/network failure becomes a message to act on
        raise ModelSourceError(describe_hub_error(error, repo_id)) from error
    return Path(folder)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())
