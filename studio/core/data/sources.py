"""Where records come from: JSON/JSONL/CSV/TSV/Parquet files, plain text (.txt/.md), `save_to_disk` folders
and Hub ids.

`open_records(source, ...)` returns a `RecordStream`: an iterator of `(location, record)` pairs —
or a `DataIssue` for a piece of the input that is not a record (malformed JSON on line N, a CSV row
with the wrong number of fields) — together with the progress made through the input. Nothing here
holds a whole file in Python lists: text files are read line by line, tables batch by batch from
Arrow. Locations are 1-based line numbers for text files and 1-based row numbers for tables, so
every problem can be reported as `file:line: reason`. A plain text file becomes `{"text": ...}` records,
one per document (the lines between blank lines, or the whole file), located by the document's first line.

Text that is not valid in the chosen encoding stops the read with a `DataError` naming the line and,
where the bytes look like a known legacy encoding (Windows-1254 Turkish, Windows-1252 Western,
Latin-1, UTF-16), the encoding to read it with.
"""

from __future__ import annotations

import codecs
import csv
import json
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.data.encoding import (
    _ASCII_COMPATIBLE,
    ENCODING_NAMES,
    _located_error,
    _not_in_encoding_error,
    normalise_encoding,
)
from studio.core.data.issues import DataError, DataIssue
from studio.core.system.paths import looks_like_hub_id  # the one rule for models and data

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
CSV_SUFFIXES = (".csv",)
TSV_SUFFIXES = (".tsv", ".tab")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".txt", ".md")
DATA_FOLDER_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES + TSV_SUFFIXES + PARQUET_SUFFIXES
"""What makes a folder a folder of data files: not text files, as every downloaded Hub repository has a README.md."""
FILE_SUFFIXES = DATA_FOLDER_SUFFIXES + TEXT_SUFFIXES
FILE_DIALOG_FILTER = "Datasets (" + " ".join(f"*{s}" for s in FILE_SUFFIXES) + ")"

SOURCE_KINDS = ("jsonl", "json", "csv", "tsv", "parquet", "text", "saved", "folder", "hub")
"""jsonl/json/csv/tsv/parquet/text: a file; saved: a `save_to_disk` folder; folder: a folder of data files
(a downloaded Hub repository); hub: a Hugging Face Hub dataset id."""

TEXT_SPLITS = ("blank_lines", "file")
"""How a plain text file is cut into documents: at blank lines, or not at all (one document per file)."""

_TABLE_BATCH_ROWS = 1000
TOO_DEEP = "nested too deeply to read (lists or objects inside each other about a thousand levels deep)"
"""Python's json parser recurses once per level: a record nested deeper than the recursion limit is a bad row."""



# What a text in each legacy encoding is expected to hold beyond ASCII. Bytes are shared by several
# code pages (0xFD is ı in cp1254 and ý in cp1252), so the page whose letters are typical wins.
# On a tie (text with no Turkish-only letter reads the same in both) the first, more common, page wins.




# ----------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    """What the user pointed at, resolved: a file of a known kind, a folder, or a Hub dataset id."""

    spec: str
    kind: str
    path: Path | None = None

    @property
    def label(self) -> Path:
        """How issues name this source: the file's path, or the Hub id."""
        return self.path if self.path is not None else Path(self.spec)

    @property
    def unit(self) -> str:
        return "line" if self.kind in ("jsonl", "json", "csv", "tsv", "text") else "row"


def resolve_source(spec: str | Path) -> Source:
    """Classify a path or Hub id; DataError when it is neither a readable source nor a Hub id."""
    text = str(spec).strip()
    if not text:
        raise DataError("no dataset given")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (
                (path / "state.json").is_file() and (path / "dataset_info.json").is_file()):
            return Source(text, "saved", path)
        if any(p.suffix.lower() in DATA_FOLDER_SUFFIXES for p in path.rglob("*") if p.is_file()):
            return Source(text, "folder", path)
        raise DataError(f"{path}: a folder, but neither one saved with datasets' save_to_disk nor one "
                        f"holding data files ({', '.join(DATA_FOLDER_SUFFIXES)})")
    suffix = path.suffix.lower()
    if path.is_file():
        for kind, suffixes in (("jsonl", JSONL_SUFFIXES), ("json", JSON_SUFFIXES), ("csv", CSV_SUFFIXES),
                               ("tsv", TSV_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("text", TEXT_SUFFIXES)):
            if suffix in suffixes:
                return Source(text, kind, path)
        raise DataError(f"{path}: unsupported file type '{suffix}' (use {', '.join(FILE_SUFFIXES)}, a folder "
                        "saved with datasets' save_to_disk, or a Hugging Face Hub dataset id)")
    if path.exists():  # a FIFO, a device (a symlink to /dev/zero): reading it could block or never end
        raise DataError(f"{path}: not a regular file ({_special_kind(path)}); give a data file or folder")
    if looks_like_hub_id(text):
        return Source(text, "hub", None)
    raise DataError(f"{path}: no such file or folder")


def _special_kind(path: Path) -> str:
    """What a path that is neither a file nor a folder is, in words."""
    import stat

    mode = path.stat().st_mode
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    return f"{kind}, through a link to {path.resolve()}" if path.is_symlink() else kind


# ----------------------------------------------------------------------------------------------------
# Record streams


class BrokenDocumentError(Exception):
    """A JSON document is syntactically broken: none of its records can be trusted."""

    def __init__(self, issue: DataIssue):
        super().__init__(str(issue))
        self.issue = issue


@dataclass
class RecordStream:
    """Records of one source in order, with how far through it the reading is (for a progress bar)."""

    source: Source
    items: Iterator[Any]
    encoding: str = ""
    columns: list[str] = field(default_factory=list)
    total_rows: int | None = None
    _progress: Callable[[], float] = lambda: 0.0

    def __iter__(self) -> Iterator[Any]:
        return self.items

    def fraction_done(self) -> float:
        return self._progress()


def open_records(source: Source | str | Path, *, encoding: str = "utf-8", split: str = "train",
                 hub_reachable: Callable[[], bool] | None = None, text_split: str = "blank_lines") -> RecordStream:
    """A RecordStream over any supported source; DataError for an unreadable source.

    `text_split` says how a plain text file is cut into documents (see TEXT_SPLITS).
    """
    if not isinstance(source, Source):
        source = resolve_source(source)
    try:
        codec = normalise_encoding(encoding)
    except ValueError as error:
        raise DataError(f"{source.label}: {error}") from None
    if text_split not in TEXT_SPLITS:
        raise DataError(f"{source.label}: unknown text split '{text_split}' (known: {', '.join(TEXT_SPLITS)})")
    if source.kind in ("jsonl", "json", "csv", "tsv", "text"):
        before = _file_state(source.path)
        return _unchanged_while_read(_open_text(source, codec, text_split), before)
    if source.kind == "parquet":
        before = _file_state(source.path)
        return _unchanged_while_read(_open_parquet(source), before)
    return _open_datasets(source, split, hub_reachable or hub_is_reachable)


def _file_state(path: Path) -> tuple[int, int]:
    """What tells a file that is being written (or replaced) from one that stays as it was."""
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(f"{path}: cannot be read: {error.strerror or error}") from None
    return stat.st_size, stat.st_mtime_ns


def file_changed_error(path: Path) -> DataError:
    return DataError(f"{path}: the file changed while it was read; read it again once it is complete")


def _unchanged_while_read(stream: RecordStream, before: tuple[int, int]) -> RecordStream:
    """The stream, which raises DataError at its end when the file's size or modification time moved while it
    was read: rows of a file still being written (or truncated) are a mix of two versions, and with
    skip_bad_rows the torn ones would be skipped silently while the stale ones trained."""
    path = stream.source.path
    assert path is not None
    items = stream.items

    def changed() -> bool:
        try:
            return _file_state(path) != before
        except DataError:
            return True  # deleted under us

    def checked() -> Iterator[Any]:
        try:
            yield from items
        except (DataError, BrokenDocumentError):
            if changed():  # a cut-off file reads as broken JSON or a bad byte: the change is the cause
                raise file_changed_error(path) from None
            raise
        if changed():
            raise file_changed_error(path)

    stream.items = checked()
    return stream


class _ByteCounter:
    """A binary file whose position can be read while lines are iterated (for progress)."""

    def __init__(self, path: Path):
        self.handle = open(path, "rb")  # noqa: SIM115 - closed when the stream is exhausted
        self.size = max(path.stat().st_size, 1)
        self.done = 0

    def lines(self) -> Iterator[bytes]:
        try:
            for raw in self.handle:
                self.done += len(raw)
                yield raw
        finally:
            self.handle.close()

    def fraction(self) -> float:
        return min(1.0, self.done / self.size)


def _open_text(source: Source, codec: str, text_split: str = "blank_lines") -> RecordStream:
    path = source.path
    assert path is not None
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError as error:
        raise DataError(f"{path}: cannot be read: {error.strerror or error}") from None
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and codec.startswith("utf-8"):
        codec = "utf-16"  # a byte-order mark is unambiguous
    if codec == "utf-8":
        codec = "utf-8-sig"  # tolerate the BOM some Windows editors write
    counter = _ByteCounter(path)
    lines = _decoded_lines(path, counter, codec)
    if source.kind == "jsonl":
        items = _jsonl_items(path, lines)
    elif source.kind == "json":
        items = _json_items(path, lines)
    elif source.kind == "text":
        items = _text_documents(lines, whole_file=text_split == "file")
    else:
        items, columns = _csv_items(path, lines, "\t" if source.kind == "tsv" else None)
        return RecordStream(source, items, encoding=_display_codec(codec), columns=columns,
                            _progress=counter.fraction)
    return RecordStream(source, items, encoding=_display_codec(codec), _progress=counter.fraction)


def _display_codec(codec: str) -> str:
    return {"utf-8-sig": "utf-8", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(codec, codec)


def _decoded_lines(path: Path, counter: _ByteCounter, codec: str) -> Iterator[str]:
    """Text lines (with their line ends) decoded one by one, so a bad byte is reported on its line."""
    if codec in _ASCII_COMPATIBLE:
        first = True
        for number, raw in enumerate(counter.lines(), start=1):
            try:
                text = raw.decode(codec if first else codec.replace("-sig", ""))
            except UnicodeDecodeError as error:
                counter.handle.close()
                raise _not_in_encoding_error(path, raw, number, error.start, _display_codec(codec)) from None
            first = False
            yield text
        return
    # UTF-16/32: lines cannot be split on bytes; decode incrementally instead.
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    pending = ""
    line = 1
    for raw in counter.lines():
        try:
            pending += decoder.decode(raw)
        except UnicodeDecodeError as error:
            counter.handle.close()
            name = ENCODING_NAMES.get(_display_codec(codec), codec)
            raise _located_error(DataIssue(path, line, f"not {name} text ({error.reason})")) from None
        *complete, pending = pending.split("\n")
        for text in complete:
            line += 1
            yield text + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _text_documents(lines: Iterator[str], *, whole_file: bool) -> Iterator[Any]:
    """A plain text file's documents as (first line, {"text": ...}): each run of non-blank lines, or the whole
    file; blank lines before and after a document are not part of it, line ends become \\n."""
    start: int | None = None
    parts: list[str] = []
    blank_run: list[str] = []  # blank lines inside a whole-file document, kept once more text follows
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip():
            if start is not None and not whole_file:
                yield start, {"text": "\n".join(parts)}
                start, parts = None, []
            elif start is not None:
                blank_run.append(text)
            continue
        if start is None:
            start = number
        parts.extend(blank_run)
        blank_run = []
        parts.append(text)
    if start is not None:
        yield start, {"text": "\n".join(parts)}


def _jsonl_items(path: Path, lines: Iterator[str]) -> Iterator[Any]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as error:
            yield DataIssue(path, number, f"malformed JSON: {error.msg} (column {error.colno})")
        except RecursionError:
            yield DataIssue(path, number, TOO_DEEP)


def _json_items(path: Path, lines: Iterator[str]) -> Iterator[Any]:
    """A .json file: an array of records, an object holding one array, or JSON Lines under a .json name."""
    text = "".join(lines)
    start = len(text) - len(text.lstrip())
    if not text[start:]:
        return
    if text[start] == "{":
        end_of_first = text.find("\n", start)
        if end_of_first != -1 and text[end_of_first:].strip():
            try:
                first = json.loads(text[start:end_of_first])
            except (json.JSONDecodeError, RecursionError):
                first = None
            if isinstance(first, dict):  # one object per line: JSON Lines named .json
                yield from _jsonl_items(path, iter(text.splitlines(keepends=True)))
                return
    yield from _JsonDocument(path, text).records()


class _JsonDocument:
    """Streams the records of a JSON array (or of the one array inside an object) without building the list.

    Each record is located by the line it starts on. A syntax error anywhere breaks the document:
    BrokenDocumentError carries the located issue and no record of the document is kept.
    """

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.decoder = json.JSONDecoder()
        self.line = 1
        self.counted_to = 0

    def _line_at(self, position: int) -> int:
        self.line += self.text.count("\n", self.counted_to, position)
        self.counted_to = position
        return self.line

    def _skip(self, position: int) -> int:
        text = self.text
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    def _broken(self, message: str, position: int) -> BrokenDocumentError:
        error = json.JSONDecodeError(message, self.text, position)
        return BrokenDocumentError(DataIssue(self.path, error.lineno, f"malformed JSON: {error.msg} "
                                                                        f"(column {error.colno})"))

    def _decode(self, position: int) -> tuple[Any, int]:
        """The value at `position` and where it ends; a value nested too deeply to parse is _TooDeep."""
        try:
            return self.decoder.raw_decode(self.text, position)
        except json.JSONDecodeError as error:
            raise BrokenDocumentError(DataIssue(self.path, error.lineno,
                                                f"malformed JSON: {error.msg} (column {error.colno})")) from None
        except RecursionError:
            return _TooDeep, self._value_end(position)

    def _value_end(self, position: int) -> int:
        """Where the value at `position` ends, found without recursion (brackets counted, strings skipped), so
        that the records after one nested too deeply are still read."""
        text, depth, i = self.text, 0, position
        while i < len(text):
            char = text[i]
            if char == '"':
                i += 1
                while True:
                    quote = text.find('"', i)
                    if quote == -1:
                        raise self._broken("Unterminated string starting at", i - 1)
                    backslashes = len(text[i:quote]) - len(text[i:quote].rstrip("\\"))
                    i = quote + 1
                    if backslashes % 2 == 0:
                        break
                if depth == 0:
                    return i
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth <= 0:
                    return i + 1
            i += 1
        raise self._broken("Expecting value", len(text))

    def records(self) -> Iterator[Any]:
        text = self.text
        position = self._skip(0)
        if text[position] == "[":
            position = yield from self._array(position)
        elif text[position] == "{":
            position = yield from self._wrapper(position)
        else:
            value, position = self._decode(position)
            yield DataIssue(self.path, 1, "expected a list of records")
        position = self._skip(position)
        if position < len(text):
            raise self._broken("Extra data", position)

    def _array(self, position: int) -> Iterator[Any]:
        text = self.text
        position = self._skip(position + 1)
        if position < len(text) and text[position] == "]":
            return position + 1
        while True:
            if position >= len(text):
                raise self._broken("Expecting value", position)
            line = self._line_at(position)
            record, position = self._decode(position)
            yield DataIssue(self.path, line, TOO_DEEP) if record is _TooDeep else (line, record)
            position = self._skip(position)
            if position < len(text) and text[position] == ",":
                position = self._skip(position + 1)
                continue
            if position < len(text) and text[position] == "]":
                return position + 1
            raise self._broken("Expecting ',' delimiter", position)

    def _wrapper(self, position: int) -> Iterator[Any]:
        text = self.text
        position = self._skip(position + 1)
        arrays = 0
        if position < len(text) and text[position] == "}":
            yield DataIssue(self.path, 1, "a JSON object must hold exactly one list of records")
            return position + 1
        while True:
            key, position = self._decode(position)
            if not isinstance(key, str):
                raise self._broken("Expecting property name enclosed in double quotes", position)
            position = self._skip(position)
            if position >= len(text) or text[position] != ":":
                raise self._broken("Expecting ':' delimiter", position)
            position = self._skip(position + 1)
            if position < len(text) and text[position] == "[":
                arrays += 1
                if arrays > 1:
                    raise BrokenDocumentError(DataIssue(self.path, 1, "a JSON object must hold exactly one list "
                                                                      "of records"))
                position = yield from self._array(position)
            else:
                _, position = self._decode(position)
            position = self._skip(position)
            if position < len(text) and text[position] == ",":
                position = self._skip(position + 1)
                continue
            if position < len(text) and text[position] == "}":
                if arrays == 0:
                    yield DataIssue(self.path, 1, "a JSON object must hold exactly one list of records")
                return position + 1
            raise self._broken("Expecting ',' delimiter", position)


class _TooDeep:
    """Stands for a JSON value nested too deeply for the parser."""


def _sniff_delimiter(header: str) -> str:
    """The delimiter that splits the header line into the most fields (Excel exports often use ';')."""
    counts = {d: len(next(csv.reader([header], delimiter=d))) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] > 1 else ","


def _csv_items(path: Path, lines: Iterator[str], delimiter: str | None) -> tuple[Iterator[Any], list[str]]:
    """Rows of a CSV/TSV file as dicts keyed by the header, each located by the line it starts on."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long conversation fits in one cell
    lines = iter(lines)
    header_number = 0
    for header_line in lines:
        header_number += 1
        if header_line.strip():
            break
    else:
        return iter(()), []
    delimiter = delimiter or _sniff_delimiter(header_line)
    header = [name.strip() for name in next(csv.reader([header_line], delimiter=delimiter))]

    def rows() -> Iterator[Any]:
        if not any(header):
            yield DataIssue(path, header_number, "the header row names no columns")
            return
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            yield DataIssue(path, header_number, f"duplicate column name(s) in the header: {', '.join(duplicates)}")
            return
        reader = csv.reader(lines, delimiter=delimiter)
        consumed = header_number
        while True:
            start = consumed + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                consumed = header_number + reader.line_num
                yield DataIssue(path, start, f"malformed CSV: {error}")
                continue
            consumed = header_number + reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                yield DataIssue(path, start, f"expected {len(header)} fields (as in the header), got {len(fields)}")
                continue
            yield start, dict(zip(header, fields))

    return rows(), header


def _open_parquet(source: Source) -> RecordStream:
    import pyarrow.parquet as pq

    path = source.path
    assert path is not None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises its own error types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    total = parquet.metadata.num_rows
    state = {"done": 0}

    def items() -> Iterator[Any]:
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=_TABLE_BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
                state["done"] = row
        except OSError as error:
            raise DataError(f"{path}: row {row + 1}: cannot be read ({error})") from None

    return RecordStream(source, items(), columns=list(parquet.schema_arrow.names), total_rows=total,
                        _progress=lambda: state["done"] / max(total, 1))


def hub_is_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (a quick TCP connect, so offline fails in seconds)."""
    import os
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _root_reason(error: BaseException) -> str:
    """The first line of the innermost cause of `error` (the library's wrappers say least)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.splitlines()[0].rstrip(" :") if text else type(error).__name__


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Make datasets/huggingface_hub use only the local cache (no 20 s of retries when there is no network)."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _open_datasets(source: Source, split: str, hub_reachable: Callable[[], bool]) -> RecordStream:
    """A save_to_disk folder, a folder of data files or a Hub id, read through `datasets` (Arrow)."""
    import datasets

    datasets.disable_progress_bars()
    split = split or "train"
    label = source.label
    try:
        if source.kind == "saved":
            loaded = datasets.load_from_disk(str(source.path))
        elif source.kind == "folder":
            loaded = datasets.load_dataset(str(source.path))
        else:
            if hub_reachable():
                loaded = datasets.load_dataset(source.spec)
            else:
                try:
                    with _hub_offline():
                        loaded = datasets.load_dataset(source.spec)
                except Exception:
                    raise DataError(
                        f"{source.spec}: the Hugging Face Hub cannot be reached from this machine (no network), "
                        "and this dataset is not in the local Hugging Face cache. Download it where there is "
                        "network (e.g. `datasets.load_dataset(...).to_json('data.jsonl')`) and open the local "
                        "file (JSONL, CSV, Parquet or a folder saved with save_to_disk)."
                    ) from None
    except DataError:
        raise
    except Exception as error:  # datasets raises many kinds; the user needs the reason, not the type
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if source.kind == "hub":
            raise DataError(f"{source.spec}: cannot load this Hub dataset: {reason}. Check the id, or open a "
                            "local file instead.") from None
        if source.kind == "folder":
            # datasets reads every data file in the folder as one table; its top error ("An error occurred while
            # generating the dataset") names neither the files nor the cause, so both are said here.
            files = sorted(str(p.relative_to(source.path)) for p in source.path.rglob("*")
                           if p.is_file() and p.suffix.lower() in DATA_FOLDER_SUFFIXES)
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            raise DataError(f"{label}: its data files ({shown}) cannot be read as one dataset: "
                            f"{_root_reason(error)}. Open one of the files instead.") from None
        raise DataError(f"{label}: cannot be read with datasets: {reason}") from None
    if isinstance(loaded, (datasets.DatasetDict, dict)):
        splits = list(loaded)
        if split in loaded:
            loaded = loaded[split]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            raise DataError(f"{label}: no split '{split}' (splits: {', '.join(splits)}); set data.split")
    dataset = loaded
    total = len(dataset)
    state = {"done": 0}

    def items() -> Iterator[Any]:
        row = 0
        for batch in dataset.iter(batch_size=_TABLE_BATCH_ROWS):
            names = list(batch)
            for values in zip(*(batch[name] for name in names)):
                row += 1
                yield row, dict(zip(names, values))
            state["done"] = row

    return RecordStream(source, items(), columns=list(dataset.column_names), total_rows=total,
                        _progress=lambda: state["done"] / max(total, 1))
