"""Reading training data, detecting its record shape and normalising it to one chat form.

Every record becomes either `{"messages": [{"role": ..., "content": ...}, ...]}` (chat) or
`{"text": ...}` (plain text for continued pre-training). Problems are collected as
`file:line: reason` rather than raised one at a time, so the user sees every bad row at once.

Sources are read by `studio.core.data.sources` (JSON, JSONL, CSV/TSV, Parquet, plain text,
`save_to_disk` folders, Hub ids); the normalised examples are written to an Arrow table batch by batch, so a
million-row file is never held as Python lists. `LoadedData.examples` reads rows from that table
on demand and `LoadedData.to_dataset()` hands it to `datasets` for training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from studio.core.data.cache import (
    _cache_key,
    _commit_cache,
    _load_cached,
    _loaded_from_table,
    _new_cache_dir,
)
from studio.core.data.encoding import normalise_encoding
from studio.core.data.issues import DataError, DataIssue
from studio.core.data.normalise import ROLES, normalise
from studio.core.data.shape import (
    _DETECTION_SAMPLE,
    FORMATS,
    MAPPING_FIELDS,
    ShapeDetection,
    _columns_of,
    detect_format,
    detect_shape,
    format_column_mapping,
    parse_column_mapping,
)
from studio.core.data.sources import (
    TEXT_SPLITS,
    BrokenDocumentError,
    open_records,
    resolve_source,
)
from studio.core.data.table import (
    LineNumbers,
    LoadedData,
    _count_duplicates,
    _NormalisedWriter,
    _read_arrow,
)
from studio.core.runs.events import make_event
from studio.core.system.tasks import NO_TASK, TaskState


def training_data(settings: Any, path: str | Path | None = None, *,
                  emit: Callable[[dict], None] | None = None) -> LoadedData:
    """Read a data file with the run's data settings; bad rows stop the run unless skip_bad_rows is on.

    Skipped rows are reported in a log event, never dropped silently.
    """
    data = require_trainable(load_with_settings(settings, path), skip_bad_rows=settings.skip_bad_rows)
    if data.issues and emit is not None:
        shown = "\n".join(str(issue) for issue in data.issues[:10])
        more = f"\n… and {data.issue_count - 10} more" if data.issue_count > 10 else ""
        emit(make_event("log", level="warning",
                        message=f"Skipping {data.issue_count} bad row(s) of {data.path} "
                                f"(data.skip_bad_rows is on):\n{shown}{more}"))
    return data


__all__ = [
    "FORMATS", "ROLES", "MAPPING_FIELDS", "DataIssue", "DataError", "LoadedData", "ShapeDetection", "ScanCancelled",
    "read_records", "detect_format", "detect_shape", "normalise", "load_data", "load_training_data",
    "require_trainable", "parse_column_mapping", "format_column_mapping", "load_with_settings",
]
"""For each record shape, the fields a source column can be mapped to (required ones first)."""

MAX_KEPT_ISSUES = 1000
"""Issues beyond this many are counted, not kept (a wholly broken million-row file stays cheap)."""
HEAD_ROWS = 200


class ScanCancelled(Exception):
    """Reading was cancelled through its task (`task.cancelled()`)."""


# ----------------------------------------------------------------------------------------------------
# Record shapes


def read_records(path: Path | str, *, encoding: str = "utf-8") -> Iterator[tuple[int, Any] | DataIssue]:
    """Yield (line, record) for each record, or a DataIssue for a part that is not a valid record."""
    stream = open_records(path, encoding=encoding)
    try:
        yield from stream
    except BrokenDocumentError as broken:
        yield broken.issue




# ----------------------------------------------------------------------------------------------------
# Loading


def load_data(
    path: Path | str,
    fmt: str = "auto",
    *,
    mapping: Mapping[str, str] | Sequence[str] | None = None,
    encoding: str = "utf-8",
    split: str = "train",
    task: TaskState = NO_TASK,
    use_cache: bool = True,
    hub_reachable: Callable[[], bool] | None = None,
    text_split: str = "blank_lines",
) -> LoadedData:
    """Read and normalise a whole source, collecting every bad row as a DataIssue.

    A plain text file is cut into documents as `text_split` says: at blank lines, or one per file.

    A source that cannot be read at all (missing, unsupported, not in the encoding) raises DataError.
    `task.progress(fraction, rows)` is called every few thousand rows, `task.partial(LoadedData)` once with
    the first rows (so a window can show them while the rest is read), and `task.cancelled()` is polled:
    when it returns True, ScanCancelled is raised.
    """
    source = resolve_source(path)
    if fmt not in ("auto", "", *FORMATS):
        raise DataError(f"{source.label}: unknown format '{fmt}' (known: auto, {', '.join(FORMATS)})")
    fmt = fmt or "auto"
    if text_split not in TEXT_SPLITS:
        raise DataError(f"{source.label}: unknown text split '{text_split}' (known: {', '.join(TEXT_SPLITS)})")
    try:
        mapping = parse_column_mapping(mapping)
        encoding = normalise_encoding(encoding)
    except ValueError as error:
        raise DataError(f"{source.label}: {error}") from None
    key = _cache_key(source, fmt, mapping, encoding, split, text_split) if use_cache else None
    cached = _load_cached(key, source)
    if cached is not None:
        task.partial(_head_of(cached))
        task.progress(1.0, cached.row_count)
        return cached

    stream = open_records(source, encoding=encoding, split=split, hub_reachable=hub_reachable, text_split=text_split)
    label, unit = source.label, source.unit
    writer = _NormalisedWriter(_new_cache_dir(key))
    issues: list[DataIssue] = []
    issue_total = 0
    broken: DataIssue | None = None

    def add_issue(issue: DataIssue) -> None:
        nonlocal issue_total
        issue_total += 1
        if len(issues) < MAX_KEPT_ISSUES:
            issues.append(issue)

    items = iter(stream)
    sample: list[Any] = []
    try:
        for item in items:
            sample.append(item)
            if len(sample) >= _DETECTION_SAMPLE:
                break
    except BrokenDocumentError as error:
        broken = error.issue
    records = [record for item in sample if not isinstance(item, DataIssue) for record in (item[1],)]
    detection = detect_shape(records, stream.columns, fmt=fmt, mapping=mapping)
    if source.kind == "text" and fmt == "auto" and not mapping:  # the file's kind is the evidence, not a key
        detection = ShapeDetection("text", "a plain text file (continued pre-training), " + (
            "the whole file as one document" if text_split == "file" else
            "one document per block of lines between blank lines"), True)
    mapping = dict(detection.mapping)  # for an unrecognised shape: the suggestion, shown but not applied
    hint = ""
    if not detection.format:
        example_mapping = ", ".join(f"{k}={v}" for k, v in detection.mapping.items()) or "prompt=question, " \
                                                                                       "completion=answer"
        hint = f"; say which column is which with a column mapping (e.g. {example_mapping})"
    head: list[tuple[int, dict[str, Any]]] = []
    head_sent = False
    started = time.monotonic()

    def handle(item: Any) -> None:
        if isinstance(item, DataIssue):
            add_issue(item if item.unit == unit else DataIssue(item.path, item.line, item.reason, unit))
            return
        line, record = item
        try:
            if not detection.format:
                try:
                    detect_format(record)
                except ValueError as error:
                    raise ValueError(f"{error}{hint}") from None
                raise ValueError(f"this record has a known shape, but the first records do not{hint}")
            example = normalise(record, detection.format, mapping)
        except ValueError as error:
            add_issue(DataIssue(label, line, str(error), unit))
            return
        writer.add(line, example)
        if len(head) < HEAD_ROWS:
            head.append((line, example))

    def meta() -> dict[str, Any]:
        return {"format": detection.format, "evidence": detection.evidence, "confident": detection.confident,
                "encoding": stream.encoding, "columns": list(stream.columns) or _columns_of(records),
                "mapping": mapping, "unit": unit}

    def send_head(complete: bool) -> None:
        nonlocal head_sent
        if head_sent:
            return
        head_sent = True
        task.partial(LoadedData(path=label, format=detection.format, evidence=detection.evidence,
                                examples=[e for _, e in head], lines=[n for n, _ in head], issues=list(issues),
                                source_kind=source.kind, encoding=stream.encoding, columns=meta()["columns"],
                                mapping=mapping, confident=detection.confident, issue_total=issue_total,
                                unit=unit, complete=complete))

    try:
        for number, item in enumerate(_chain(sample, items), start=1):
            handle(item)
            if number % 500 == 0:
                if task.cancelled():
                    raise ScanCancelled()
                if not head_sent and (len(head) >= HEAD_ROWS or time.monotonic() - started > 0.5):
                    send_head(False)
                if number % 2000 == 0:
                    task.progress(stream.fraction_done(), writer.count)
    except BrokenDocumentError as error:
        broken = error.issue
    except BaseException:
        writer.discard()
        raise
    if broken is not None:  # a syntax error anywhere in a JSON document: none of its records can be trusted
        writer.discard()
        writer = _NormalisedWriter(None)
        head.clear()
        issues[:] = [broken]
        issue_total = 1
    table = writer.finish()
    duplicates, pairs = _count_duplicates(writer.hashes, LineNumbers(table))
    info = {**meta(), "issues": [[i.line, i.reason] for i in issues], "issue_total": issue_total,
            "duplicates": duplicates, "duplicate_pairs": pairs}
    arrow_path = writer.path
    if arrow_path is not None and key is not None:
        arrow_path = _commit_cache(arrow_path.parent, key, info)
        table = _read_arrow(arrow_path)
    send_head(True)
    task.progress(1.0, writer.count)
    return _loaded_from_table(source, table, arrow_path, info)


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    yield from rest




def _head_of(data: LoadedData) -> LoadedData:
    return LoadedData(path=data.path, format=data.format, evidence=data.evidence,
                      examples=list(data.examples[:HEAD_ROWS]), lines=list(data.lines[:HEAD_ROWS]),
                      issues=list(data.issues), source_kind=data.source_kind, encoding=data.encoding,
                      columns=data.columns, mapping=data.mapping, confident=data.confident,
                      issue_total=data.issue_total, unit=data.unit, complete=False)


def load_training_data(path: Path | str, fmt: str = "auto", *, skip_bad_rows: bool = False,
                       **options: Any) -> LoadedData:
    """Like load_data, but bad rows are a DataError unless `skip_bad_rows`; no rows at all always is.

    Training never skips data silently: skipped rows are still listed in `issues`.
    """
    return require_trainable(load_data(path, fmt, **options), skip_bad_rows=skip_bad_rows)


def require_trainable(data: LoadedData, *, skip_bad_rows: bool) -> LoadedData:
    """The data itself, or a DataError: bad rows unless `skip_bad_rows`, no usable rows at all always."""
    if data.issues and not skip_bad_rows:
        raise DataError(f"{data.path}: {data.issue_count} bad row(s)", data.issues, total=data.issue_count)
    if not len(data.examples):
        if data.issues:
            raise DataError(f"{data.path}: no usable examples ({data.issue_count} bad row(s))", data.issues,
                            total=data.issue_count)
        raise DataError(f"{data.path}: no examples")
    return data


def load_with_settings(settings: Any, path: str | Path | None = None, **options: Any) -> LoadedData:
    """load_data with a DataSettings' format, column mapping, encoding, split and text split (path: its
    train_file)."""
    return load_data(path if path is not None else settings.train_file, settings.format,
                     mapping=settings.column_mapping, encoding=settings.encoding, split=settings.split,
                     text_split=settings.text_split, **options)
