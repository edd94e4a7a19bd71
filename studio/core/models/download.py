"""Downloading a model from the Hugging Face Hub into the HF cache: progress in bytes, cancel, and one clear line
for each way it fails (offline, unknown or gated repository, a full disk).
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.core.models.source import _IGNORED_FILES, ModelSourceError, looks_like_hub_id
from studio.core.system.paths import hf_cache_dir
from studio.core.system.tasks import NO_TASK, TaskState


class DownloadCancelled(ModelSourceError):
    """The user cancelled a download; the files already fetched stay in the cache."""

    def __init__(self, repo_id: str = ""):
        super().__init__(f"Download of {repo_id} cancelled. Start it again to resume where it stopped."
                         if repo_id else "Download cancelled.")


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


def _progress_bar_class(report: Callable[[str, int, int], None], task: TaskState) -> type:
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
            if task.cancelled():
                raise DownloadCancelled()
            shown = super().update(n)
            report(self._role, int(self.n), int(self.total or 0))
            return shown

    return _ReportingTqdm


def describe_hub_error(error: BaseException, repo_id: str) -> str:
    """A message a user can act on, for the Hub errors a download can meet."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
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
    task: TaskState = NO_TASK,
    cache_dir: Path | None = None,
    report_interval_s: float = 0.2,
) -> Path:
    """Download a Hub model into the HF cache (weights, config and tokenizer only) and return its
    snapshot folder: `task.progress(DownloadProgress)` at most every `report_interval_s`, DownloadCancelled once
    `task.cancelled()`. Interrupted downloads resume where they stopped. Raises ModelSourceError."""
    from huggingface_hub import HfApi, snapshot_download

    repo_id = repo_id.strip()
    if not looks_like_hub_id(repo_id):
        raise ModelSourceError(f"{repo_id!r} is not a Hub id such as meta-llama/Llama-3.2-1B-Instruct")
    lock = threading.Lock()
    state = {"bytes": 0, "bytes_total": 0, "files": 0, "files_total": 0, "last": 0.0}

    def report(role: str, n: int, total: int) -> None:
        if role == "transfer":
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
        task.progress(snapshot)

    try:
        ignore = list(_IGNORED_FILES)
        revision = None
        if not _offline():
            info = HfApi().model_info(repo_id)
            revision = info.sha
            names = [s.rfilename for s in info.siblings or []]
            if any(n.endswith(".safetensors") for n in names):
                ignore += ["*.bin", "*.pt"]  # the same weights twice in the older format
        if task.cancelled():
            raise DownloadCancelled(repo_id)
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else str(hf_cache_dir()),
            ignore_patterns=ignore,
            tqdm_class=_progress_bar_class(report, task),
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
