"""The on-disk cache of normalised data: a file read once with the same settings is read back as its Arrow table
(keyed by the source's path, size and modification time, the format, mapping, encoding and split), written into a
staging folder first and committed by rename, with the oldest entries evicted beyond a few.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from studio.core.data.issues import DataIssue
from studio.core.data.sources import (
    Source,
)
from studio.core.data.table import ExampleRows, LineNumbers, LoadedData, _read_arrow

_CACHE_VERSION = 1
_CACHE_KEEP = 4


# ----------------------------------------------------------------------------------------------------
# The on-disk cache of large scans (reopening a big file, and training after previewing, skip the scan)


def _cache_root() -> Path:
    from studio.core.system.paths import user_data_dir

    return user_data_dir() / "cache" / "data"


def _cache_key(source: Source, fmt: str, mapping: Mapping[str, str], encoding: str, split: str,
               text_split: str = "blank_lines") -> str | None:
    if source.path is None or not source.path.is_file():
        return None  # folders and Hub datasets are Arrow already (cached by datasets)
    stat = source.path.stat()
    payload = json.dumps([_CACHE_VERSION, str(source.path.resolve()), stat.st_size, stat.st_mtime_ns, fmt,
                          sorted(mapping.items()), encoding, split]
                         + ([text_split] if source.kind == "text" else []))
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _load_cached(key: str | None, source: Source) -> LoadedData | None:
    if key is None:
        return None
    folder = _cache_root() / key
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        table = _read_arrow(folder / "normalised.arrow")
    except (OSError, ValueError):
        return None
    os.utime(folder)  # most recently used
    return _loaded_from_table(source, table, folder / "normalised.arrow", meta)


def _loaded_from_table(source: Source, table: Any, arrow_path: Path | None, meta: dict[str, Any]) -> LoadedData:
    label = source.label
    issues = [DataIssue(label, line, reason, meta.get("unit", "line")) for line, reason in meta["issues"]]
    return LoadedData(
        path=label, format=meta["format"], evidence=meta["evidence"],
        examples=ExampleRows(table, arrow_path), lines=LineNumbers(table, arrow_path), issues=issues,
        source_kind=source.kind, encoding=meta["encoding"], columns=meta["columns"], mapping=meta["mapping"],
        confident=meta["confident"], issue_total=meta["issue_total"], duplicates=meta["duplicates"],
        duplicate_pairs=[tuple(p) for p in meta["duplicate_pairs"]], unit=meta.get("unit", "line"),
    )


def _new_cache_dir(key: str | None) -> Callable[[], Path] | None:
    if key is None:
        return None

    def make() -> Path:
        root = _cache_root()
        root.mkdir(parents=True, exist_ok=True)
        folder = root / f"{key}.{uuid.uuid4().hex[:8]}.partial"
        folder.mkdir()
        return folder

    return make


def _commit_cache(partial: Path, key: str, meta: dict[str, Any]) -> Path:
    """Write the scan's metadata and move its folder into place; returns where the arrow file now is."""
    (partial / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    target = partial.parent / key
    try:
        os.replace(partial, target)
    except OSError:  # another process cached the same scan first; ours stays until evicted
        return partial / "normalised.arrow"
    _evict_cache(target.parent, keep=target)
    return target / "normalised.arrow"


def _evict_cache(root: Path, keep: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    complete = [p for p in entries if not p.name.endswith(".partial")]
    stale = [p for p in entries if p.name.endswith(".partial") and time.time() - p.stat().st_mtime > 86400]
    for folder in complete[_CACHE_KEEP:] + stale:
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
