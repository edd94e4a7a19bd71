"""What the Dataset tab chose, read and shows: the source and how it is read (kept in the run draft), the reading
and its problems, the rows, the selected row's preview, the model's tokenizer, the token-length statistics, the
held-out split, and the background tasks that produce them. The tab binds its widgets to a `DatasetSession`:
it writes every edit here, re-renders on the aspects a change names (`subscribe`) and starts the work the
session says is wanted (`needs_read`, `wants_tokenizer`, `stats_wanted`) on its TaskRunners.

The data settings live in the one `RunDraft` the Config tab edits too; this session writes every data edit
into it and follows every change made elsewhere (another model, another max_length, a config loaded from a run).
The tasks (`read_source`, `load_model_tokenizer`, `measure_lengths`) are plain functions of a request
and a `core.system.tasks.TaskState` (`progress(...)`, `partial(value)`, `cancelled()`; the window's is
`studio.ui.background.WindowTaskState`); `importing` is how they import the heavy libraries (the window pauses garbage
collection then).

For a method beyond SFT (training.method dpo, orpo, kto, grpo) the source is read by
`core.methods.reading.load_preference_data`, the reader the run itself uses, so the rows, the shape and
the `file:line: reason` problems shown are the ones that train; the preview renders each pair's chosen and
rejected reply after the prompt with the model's chat template, the reply's tokens trained as TRL trains them.
What the session knows of methods comes from the methods wing's registry (`method_data`).
"""

from __future__ import annotations

import copy
import html
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config.settings import (
    DataSettings, RunConfig, TrainingSettings, auto_eval_fraction, config_field, describe_evaluation, field_bounds,
    held_out_count,
)
from studio.core.data.encoding import ENCODING_NAMES
from studio.core.data.issues import DataError
from studio.core.data.loading import ScanCancelled, load_data
from studio.core.data.shape import FORMAT_NAMES, PREFERENCE_FORMAT_NAMES, format_column_mapping, parse_column_mapping
from studio.core.data.sources import FILE_DIALOG_FILTER, resolve_source
from studio.core.data.table import LoadedData
from studio.core.methods.registry import default_method, method_names
from studio.core.methods.registry import method as method_spec
from studio.core.sessions.draft import Change, RunDraft
from studio.core.system.tasks import TaskState, reporting

__all__ = ["EVERYTHING", "FILE_DIALOG_FILTER", "MODEL", "PREVIEW", "PROGRESS", "READ", "READ_ERRORS",
           "ROWS", "SETTINGS", "STATS", "TEXT_SPLIT_LABELS", "DatasetSession", "EvaluationView", "MethodData",
           "ProblemsView", "ReadRequest", "RowPreview", "StatsRequest", "StatsView", "eval_fraction_range",
           "example_cells", "format_name", "load_model_tokenizer", "measure_lengths", "method_data", "read_source",
           "table_headers"]

DEFAULT_METHOD = default_method()

log = logging.getLogger(__name__)

READ_FIELDS = ("train_file", "format", "column_mapping", "encoding", "split", "text_split")
"""The data settings that decide what is read: a change to any of them means reading the source again."""
TAB_FIELDS = ("train_file", "eval_file", "eval_fraction", "train_on_responses_only", "format", "column_mapping",
              "encoding", "skip_bad_rows", "split", "text_split")
"""The data settings the Dataset tab edits."""
STATS_SAMPLE_ROWS = 20_000
"""Token lengths are first measured on this many random rows; 'Measure all rows' does the rest."""
PROGRESS_INTERVAL = 0.1
"""Seconds between two progress reports of a read: more would only queue repaints."""
READ_ERRORS = (DataError, ScanCancelled)
"""What a read raises on purpose: a source it cannot use, or a cancellation."""
TEXT_SPLIT_LABELS = {"blank_lines": "a document per block (split at blank lines)", "file": "one document per file"}
"""data.text_split's choices, as the source bar offers them for a plain text file."""
_NEW_SOURCE = {"format": "auto", "column_mapping": [], "encoding": "utf-8", "skip_bad_rows": False,
               "split": "train", "text_split": "blank_lines"}
RED, GREEN, GREY = "#b3261e", "#1e7b34", "#8a8a8a"

Importing = Callable[[], AbstractContextManager]


# --------------------------------------------------------------------------------------------- the methods


@dataclass(frozen=True)
class MethodData:
    """What the Dataset tab needs of a training method: the data shape it reads and how it is shown."""

    title: str
    columns: tuple[str, ...]
    """The table's columns after the line or row."""
    example: str
    """What one example is ("pair", "reply", "prompt"); "" for SFT's conversations."""

    @property
    def conversations(self) -> bool:
        """SFT: the data is read as conversations, measured, and masked as data.train_on_responses_only says;
        the other methods' data is read by the run's preference reader and tokenised by TRL's trainer itself."""
        return not self.example


def method_data(method: str) -> MethodData:
    """What the Dataset tab shows of `method`'s data, from the methods wing (an unknown name: the default method's)."""
    spec = method_spec(method if method in method_names() else DEFAULT_METHOD)
    return MethodData(spec.title, spec.data.columns, spec.data.kind if spec.reads_own_records else "")


def format_name(fmt: str) -> str:
    """A detected shape's name, SFT's or a preference method's."""
    return {**FORMAT_NAMES, **PREFERENCE_FORMAT_NAMES}.get(fmt, fmt)


def table_headers(method: str, unit: str = "line") -> tuple[str, ...]:
    """The Dataset tab's columns for the data of `method` (the first is the source line or row)."""
    return ("Row" if unit == "row" else "Line", *method_data(method).columns)


def _turns_text(turns: Any) -> str:
    if isinstance(turns, str):
        return turns
    return "\n".join(str(turn.get("content") or "") for turn in turns or [] if isinstance(turn, dict))


def example_cells(example: dict[str, Any]) -> tuple[Any, ...]:
    """The cells after the line of one example as its method reads it (an SFT one, a pair, a labelled reply or a
    prompt): what `table_headers` names."""
    if "chosen" in example:
        return _turns_text(example["prompt"]), _turns_text(example["chosen"]), _turns_text(example["rejected"])
    if "label" in example:
        return (_turns_text(example["prompt"]), _turns_text(example["completion"]),
                "desirable" if example["label"] else "undesirable")
    if "expected" in example:
        return _turns_text(example["prompt"]), example["expected"]
    user, assistant, turns = example_summary(example)
    return turns, user, assistant


def example_summary(example: dict[str, Any]) -> tuple[str, str, int]:
    """First user text, first assistant text and the number of turns of a normalised example."""
    if "text" in example:
        return example["text"], "", 1
    messages = example["messages"]
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    assistant = next((m["content"] for m in messages if m["role"] == "assistant"), "")
    return user, assistant, len(messages)


# --------------------------------------------------------------------------------------------- the tasks


@dataclass(frozen=True)
class ReadRequest:
    """One read of a source, as the data settings asked for it when it started."""

    spec: str
    fmt: str
    mapping: tuple[str, ...]
    encoding: str
    split: str
    text_split: str
    method: str = DEFAULT_METHOD
    """training.method: beyond SFT the source is read as that method's training reads it."""

    @classmethod
    def of(cls, data: DataSettings, method: str = DEFAULT_METHOD) -> ReadRequest:
        return cls(data.train_file, data.format, tuple(data.column_mapping), data.encoding, data.split,
                   data.text_split, method)


def warm_up_arrow() -> None:
    """Import pyarrow, and the pandas it loads on its first array, before reading starts (see `importing`)."""
    import pyarrow

    pyarrow.array([0])


def read_source(request: ReadRequest, state: TaskState, *, importing: Importing = nullcontext) -> LoadedData:
    """Read and normalise a source: the first rows through `state.partial`, `state.progress(fraction, rows)` at
    most every PROGRESS_INTERVAL seconds, and the LoadedData. Raises ScanCancelled once cancelled, and a
    DataError for anything a file can make the core raise: nothing a file contains may take the window down."""
    last = [0.0]

    def progress(fraction: float, rows: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
            last[0] = now
            state.progress(fraction, rows)

    if not method_data(request.method).conversations:
        return read_method_source(request, state)
    try:
        with importing():
            warm_up_arrow()
        return load_data(request.spec, request.fmt, mapping=list(request.mapping), encoding=request.encoding,
                         split=request.split, text_split=request.text_split, task=reporting(state, progress))
    except (ScanCancelled, DataError):
        raise
    except Exception as error:
        log.error("reading %s failed:\n%s", request.spec, traceback.format_exc())
        raise DataError(f"{request.spec}: cannot be read ({type(error).__name__}: {error})") from error


def read_method_source(request: ReadRequest, state: TaskState) -> LoadedData:
    """A source read for a method beyond SFT by the run's own reader, as the tab's LoadedData (examples in
    TRL's form: prompt/chosen/rejected, prompt/completion/label, or prompt/expected)."""
    from studio.core.methods.reading import load_preference_data

    try:
        read = load_preference_data(request.spec, request.method, mapping=list(request.mapping) or None,
                                    encoding=request.encoding, split=request.split, task=state)
    except InterruptedError:
        raise ScanCancelled() from None
    except DataError:
        raise
    except Exception as error:
        log.error("reading %s for %s failed:\n%s", request.spec, request.method, traceback.format_exc())
        raise DataError(f"{request.spec}: cannot be read ({type(error).__name__}: {error})") from error
    state.progress(1.0, len(read.examples))
    return read.as_loaded_data(request.encoding)


def load_model_tokenizer(name: str, *, trust_remote_code: bool, importing: Importing = nullcontext) -> Any:
    """The model's tokenizer with its chat template, as training uses it."""
    from studio.core.train.prepare import load_tokenizer

    with importing():
        return load_tokenizer(name, trust_remote_code=trust_remote_code)


def tokenizer_failure(error: BaseException) -> str:
    """A wrong path or an unreachable Hub id, in one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class StatsRequest:
    """One measurement of token lengths, with the settings it was started with."""

    model: str
    data: LoadedData
    train_on_responses_only: bool
    max_length: int
    limit: int | None
    trust_remote_code: bool = False


def measure_lengths(request: StatsRequest, state: TaskState, *, importing: Importing = nullcontext) -> Any:
    """Token lengths measured with a tokenizer of its own: a TokenStats through `state.partial` a few times a
    second, then the last one; None when cancelled."""
    from studio.core.data.stats import measure_tokens

    tokenizer = load_model_tokenizer(request.model, trust_remote_code=request.trust_remote_code,
                                     importing=importing)
    try:
        return measure_tokens(tokenizer, request.data, train_on_responses_only=request.train_on_responses_only,
                              max_length=request.max_length, limit=request.limit, task=state)
    except ScanCancelled:
        return None


# --------------------------------------------------------------------------------------------- what is shown

SETTINGS, ROWS, READ, PROGRESS, PREVIEW, STATS, MODEL = (
    "settings", "rows", "read", "progress", "preview", "stats", "model")
"""The aspects a change names: the data settings; the rows (another LoadedData or method); the reading's state
(summary, problems, columns); the read's progress only; the selected row's preview; the token-length statistics;
the model (its tokenizer is to be loaded, after the typing stops)."""
EVERYTHING = frozenset({SETTINGS, ROWS, READ, PROGRESS, PREVIEW, STATS, MODEL})

Listener = Callable[[frozenset], None]


@dataclass(frozen=True)
class RowPreview:
    """What the preview shows for one row: its place, then either the token preview or why there is none."""

    where: str
    preview: Any = None
    message: str = ""
    waiting_for_tokenizer: bool = False
    sides: tuple[tuple[str, Any], ...] = ()
    """Beyond SFT: (title, ExamplePreview) of each reply after the prompt, chosen then rejected for a pair;
    `preview` is the first."""
    info: str = ""
    """The line above the tokens (rich text): where, and the counts of the tokens trained, masked and cut."""


@dataclass(frozen=True)
class ProblemsView:
    """What the Problems panel lists, and its tab's title."""

    issues: tuple
    total: int
    rows: int
    file_error: str = ""
    guess: Any = None
    read_as: str = "UTF-8"
    title: str = "Problems"


@dataclass(frozen=True)
class StatsView:
    """The token-length panel: the statistics (or the caption saying why there are none), the status line and
    the "Measure all" button's text ("" hides it)."""

    stats: Any
    message: str
    status: str
    measure_all: str = ""


@dataclass(frozen=True)
class EvaluationView:
    """The Eval split panel: the choice ("none", "fraction", "file"), its values and what it means."""

    choice: str
    fraction: float
    file: str
    counts: str


def eval_fraction_range() -> tuple[float, float, float, int]:
    """(lowest, highest, step, decimals) the fraction box offers: not down to the field's 0, since "No evaluation"
    is its own choice."""
    meta = config_field("data", "eval_fraction").metadata
    return meta["step"], field_bounds("data", "eval_fraction")[1], meta["step"], meta["decimals"]


class DatasetSession:
    """The Dataset tab's state and decisions; its data settings are the draft's, so the Config tab sees every
    edit, and it follows every change the draft hears from elsewhere."""

    def __init__(self, draft: RunDraft | None = None):
        self.draft = draft if draft is not None else RunDraft()
        self.data: LoadedData | None = None
        self.read_state = "idle"
        """idle (nothing read), reading, done, failed or cancelled."""
        self.read_error: DataError | None = None
        self.progress = (0.0, 0)
        self.selected_row = 0
        self.stats: Any = None
        self.stats_error = ""
        self.measuring = False
        self._stats_key: tuple | None = None
        self._stats_limit: int | None = STATS_SAMPLE_ROWS
        self.tokenizer: Any = None
        self.tokenizer_name = ""
        self.tokenizer_error = ""
        self.tokenizer_loading = ""
        self.last_read: ReadRequest | None = None
        self._wants_file_for_eval = False
        self._model = self.model_name
        self._listeners: list[Listener] = []
        self.draft.subscribe(self._on_draft_changed)  # for as long as the draft lives: the session is its view

    # --- change notification -------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(aspects)` after every change, with the aspects it touched; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self, *aspects: str) -> None:
        if aspects:
            for listener in list(self._listeners):
                listener(frozenset(aspects))

    def _on_draft_changed(self, change: Change) -> None:
        aspects = {SETTINGS}
        if self._follow_model():
            aspects |= {MODEL, PREVIEW, STATS}
        if change.touches("training", "max_length", "method") or change.touches("data", "train_on_responses_only"):
            aspects |= {PREVIEW, STATS}
        if change.section is None or self.settings.eval_fraction > 0:
            self._wants_file_for_eval = False  # another config, or a fraction chosen elsewhere
        if self.forget_source():
            aspects = set(EVERYTHING)
        self._changed(*aspects)

    # --- the shared settings -----------------------------------------------------------------------------
    @property
    def settings(self) -> DataSettings:
        return self.draft.config.data

    @property
    def model_name(self) -> str:
        return (self.draft.config.model.name_or_path or "").strip()

    @property
    def trust_remote_code(self) -> bool:
        return self.draft.config.model.trust_remote_code

    @property
    def max_length(self) -> int:
        return self.draft.config.training.max_length

    @property
    def seed(self) -> int:
        return self.draft.config.training.seed

    @property
    def training(self) -> TrainingSettings:
        return self.draft.config.training

    @property
    def method(self) -> str:
        """training.method, which decides how the source is read."""
        return self.draft.config.training.method

    @property
    def data_method(self) -> str:
        """The method the shown data was read for."""
        return self.last_read.method if self.last_read is not None else self.method

    @property
    def shows_conversations(self) -> bool:
        """The shown data is SFT's: conversations whose loss mask data.train_on_responses_only decides."""
        return method_data(self.data_method).conversations

    @property
    def file_error(self) -> str:
        return str(self.read_error) if self.read_error is not None else ""

    @property
    def reading(self) -> bool:
        return self.read_state == "reading"

    def edit(self, *, source: object | None = None, **values: Any) -> Change | None:
        """Write data settings into the draft (one notification, none when nothing changes)."""
        return self.draft.update("data", source=source, **values)

    def apply_to(self, config: RunConfig) -> None:
        """Write the data settings the tab edits into another config."""
        for name in TAB_FIELDS:
            setattr(config.data, name, copy.deepcopy(getattr(self.settings, name)))

    def open(self, spec: str, *, source: object | None = None) -> bool:
        """Choose a source; a different one starts with automatic detection, UTF-8, no column mapping, the train
        split and bad rows refused. Returns whether it is a different source. Opening asks for a read even of
        the same source (after a cancelled read, "open the file again")."""
        self.last_read = None
        if spec == self.settings.train_file:
            self._changed(READ)
            return False
        self.edit(source=source, train_file=spec, **_NEW_SOURCE)
        return True

    def apply_mapping(self, fmt: str, mapping: dict[str, str], *, source: object | None = None) -> Change | None:
        """The Columns panel's choice; beyond SFT only the columns are mapped (a preference method detects its
        shape per record)."""
        if not method_data(self.data_method).conversations:
            fmt = "auto"
        return self.edit(source=source, format=fmt, column_mapping=format_column_mapping(mapping))

    def mapping(self) -> dict[str, str]:
        """The column mapping as field → column ({} while it cannot be parsed)."""
        try:
            return parse_column_mapping(self.settings.column_mapping)
        except ValueError:
            return {}

    def source_kind(self) -> str:
        """What the source is ("jsonl", "text", "saved", "folder", "hub", ...; "" for none or an unusable one):
        a split name is asked of a Hub dataset or a folder, how to cut documents of a plain text file."""
        try:
            return resolve_source(self.settings.train_file).kind if self.settings.train_file else ""
        except DataError:
            return ""

    # --- reading -------------------------------------------------------------------------------------------
    def needs_read(self) -> bool:
        """Whether the source must be read: a source is chosen and what decides the reading (the settings in
        READ_FIELDS, the method, an explicit open) changed since the last read began. A failed or cancelled
        read is not retried by edits elsewhere."""
        return bool(self.settings.train_file) and self.last_read != ReadRequest.of(self.settings, self.method)

    def forget_source(self) -> bool:
        """The draft names no source any more (a continuation with DPO clears the SFT run's chat data, which holds no
        pairs): what was read from the old source no longer describes the run's data. True when something was
        forgotten."""
        if self.settings.train_file or (self.last_read is None and self.read_state == "idle"):
            return False
        self.data, self.stats, self.read_error, self.last_read, self.read_state = None, None, None, None, "idle"
        self._stats_key, self.measuring = None, False
        return True

    def no_source_text(self) -> str:
        """What the tab says with no source chosen: what to open, for the method the run trains with."""
        from studio.core.sessions.config import method_data_note

        return f"No dataset open. {method_data_note(self.method)} Open a file, a saved dataset folder or a Hub id."

    def begin_read(self) -> ReadRequest:
        """Forget what was read and measured; the request of the read that starts now (also its identity:
        a late report of an older read is not this one's)."""
        self.data, self.stats, self.read_error, self.stats_error = None, None, None, ""
        self._stats_key, self._stats_limit, self.measuring = None, STATS_SAMPLE_ROWS, False
        self.read_state, self.progress, self.selected_row = "reading", (0.0, 0), 0
        self.last_read = ReadRequest.of(self.settings, self.method)
        self._changed(*EVERYTHING - {MODEL})
        return self.last_read

    def check_source(self) -> bool:
        """Whether the source being read exists as a file, folder or Hub id; if not, the read has failed at once
        (a missing file is said before any thread starts)."""
        try:
            resolve_source(self.settings.train_file)
        except DataError as error:
            self.read_failed(error)
            return False
        return True

    def read_head(self, head: LoadedData) -> None:
        """The first rows, while the rest is being read."""
        if self.reading:
            self.data = head
            self._changed(ROWS, READ, PREVIEW)

    def read_progressed(self, fraction: float, rows: int) -> None:
        self.progress = (fraction, rows)
        self._changed(PROGRESS)

    def read_done(self, data: LoadedData) -> None:
        if not self.reading:
            return  # the source was forgotten meanwhile (its read is being cancelled)
        self.data, self.read_state = data, "done"
        self.selected_row = max(0, min(self.selected_row, len(data.examples) - 1))
        self._changed(ROWS, READ, PROGRESS, PREVIEW, STATS)

    def read_failed(self, error: DataError) -> None:
        if not self.reading:
            return
        self.data, self.read_error, self.read_state = None, error, "failed"
        self._changed(ROWS, READ, PROGRESS, PREVIEW, STATS)

    def read_cancelled(self, request: ReadRequest | None = None) -> bool:
        """The user cancelled the read of `request`: the rows read so far stay on show. False for an older read
        (replaced by a newer one, not cancelled by the user)."""
        if not self.reading or (request is not None and request is not self.last_read):
            return False
        self.read_state = "cancelled"
        self._changed(READ, PROGRESS, PREVIEW, STATS)
        return True

    def attention(self) -> str:
        """The panel a finished read asks to be looked at: "columns" when the shape is not (surely) recognised,
        "problems" for bad rows or a source that cannot be used, "" otherwise."""
        if self.read_state == "failed":
            return "problems"
        if self.read_state != "done" or self.data is None:
            return ""
        if not self.data.format or not self.data.confident:
            return "columns"
        return "problems" if self.data.issue_count else ""

    def summary(self) -> str:
        """The line under the source bar (rich text)."""
        data, state = self.data, self.read_state
        if not self.settings.train_file and state == "idle":
            return html.escape(self.no_source_text())
        if state == "failed":
            return f"<b style='color:{RED}'>Cannot use this data.</b> {html.escape(self.file_error.splitlines()[0])}"
        if state == "cancelled":
            shown = len(data.examples) if data is not None else 0
            return (f"<b style='color:{RED}'>Reading cancelled.</b> The first {shown:,} rows are shown; open the file "
                    "again to read all of it.")
        if data is None:
            return f"Reading {html.escape(self.settings.train_file)}…"
        return self._describe(data, reading=state == "reading")

    def _describe(self, data: LoadedData, *, reading: bool) -> str:
        rows = len(data.examples)
        if not reading and not rows and not data.issue_count:
            return f"<b style='color:{RED}'>Cannot use this data.</b> {html.escape(str(data.path))} holds no records."
        parts = [f"<b>{rows:,}</b> {'rows so far' if reading else 'rows'}"]
        if data.format:
            parts.append(f"<b>{html.escape(format_name(data.format))}</b> — {html.escape(data.evidence)}")
        else:
            parts.append(f"<b style='color:{RED}'>shape not recognised</b> — map the columns")
        if not reading:
            if data.issue_count:
                verdict = "skipped when training" if self.settings.skip_bad_rows else "training refuses the data"
                parts.append(f"<b style='color:{RED}'>{data.issue_count:,} bad row(s)</b> ({verdict})")
            else:
                parts.append("no bad rows")
            if data.duplicates:
                example = (f", e.g. line {data.duplicate_pairs[0][0]} repeats line {data.duplicate_pairs[0][1]}"
                           if data.duplicate_pairs else "")
                parts.append(f"{data.duplicates:,} duplicate(s){example}")
        encoding = ENCODING_NAMES.get(data.encoding, data.encoding)
        if encoding:
            parts.append(encoding)
        if not self.shows_conversations:
            parts.insert(0, f"read for <b>{method_data(self.data_method).title}</b>")
        return " · ".join(parts)

    def problems(self) -> ProblemsView:
        """Every bad row of the last read, or why the source cannot be used (with an encoding that reads it)."""
        error, data = self.read_error, self.data
        if error is not None:
            return ProblemsView(tuple(error.issues), len(error.issues), 0, self.file_error.splitlines()[0],
                                getattr(error, "encoding_guess", None),
                                ENCODING_NAMES.get(self.settings.encoding, self.settings.encoding), "Problems (!)")
        if data is None or self.read_state != "done":
            return ProblemsView((), 0, 0)
        empty = "" if len(data.examples) or data.issue_count else f"{data.path}: holds no records"
        title = f"Problems ({data.issue_count:,})" if data.issue_count else "Problems"
        return ProblemsView(tuple(data.issues), data.issue_count, len(data.examples), empty, title=title)

    def mapping_data(self) -> LoadedData | None:
        """The reading the Columns panel describes: a finished one (its columns and detected shape)."""
        return self.data if self.read_state in ("done", "cancelled") else None

    # --- the tokenizer -------------------------------------------------------------------------------------
    def _follow_model(self) -> bool:
        """True when the model changed since the last call: its tokenizer and the statistics are forgotten."""
        if self.model_name == self._model:
            return False
        self._model = self.model_name
        self.tokenizer, self.tokenizer_name, self.tokenizer_error = None, "", ""
        self.stats, self._stats_key, self.measuring = None, None, False
        return True

    def wants_tokenizer(self) -> bool:
        """A model is chosen whose tokenizer is neither loaded, being loaded nor known to fail."""
        name = self.model_name
        return (bool(name) and self.tokenizer_name != name and not self.tokenizer_error
                and self.tokenizer_loading != name)

    def begin_tokenizer(self) -> str:
        """The model whose tokenizer is to be loaded now ("" when none is wanted)."""
        if not self.wants_tokenizer():
            return ""
        self.tokenizer_loading = self.model_name
        self._changed(PREVIEW)
        return self.tokenizer_loading

    def tokenizer_ended(self, name: str) -> None:
        if self.tokenizer_loading == name:
            self.tokenizer_loading = ""

    def tokenizer_loaded(self, name: str, tokenizer: Any) -> bool:
        """Keep a loaded tokenizer; False (and nothing kept) when the model changed meanwhile."""
        if name != self.model_name:
            return False
        self.tokenizer, self.tokenizer_name = tokenizer, name
        self._changed(PREVIEW, STATS)
        return True

    def tokenizer_failed(self, name: str, error: BaseException) -> bool:
        if name != self.model_name:
            return False
        self.tokenizer_error = tokenizer_failure(error)
        self._changed(PREVIEW, STATS)
        return True

    # --- statistics ----------------------------------------------------------------------------------------
    def stats_request(self, limit: int | None = STATS_SAMPLE_ROWS) -> StatsRequest | None:
        """What to measure, or None while there is nothing to measure (no complete data, no tokenizer)."""
        data = self.data
        if data is None or not data.complete or not len(data.examples) or self.tokenizer is None:
            return None
        if not self.shows_conversations:
            return None  # the histogram measures SFT examples; TRL's trainers tokenise the others themselves
        return StatsRequest(self.model_name, data, self.settings.train_on_responses_only, self.max_length, limit,
                            self.trust_remote_code)

    @staticmethod
    def _key(request: StatsRequest) -> tuple:
        return request.model, id(request.data), request.train_on_responses_only, request.limit

    def stats_wanted(self) -> StatsRequest | None:
        """The measurement to start now: the data, the model or the loss mask changed since the last one began
        ("Measure all" asks for every row); None when the one begun still holds."""
        request = self.stats_request(self._stats_limit)
        if request is None or self._key(request) == self._stats_key:
            return None
        return request

    def begin_stats(self, request: StatsRequest) -> None:
        self._stats_key, self.stats, self.stats_error, self.measuring = self._key(request), None, "", True
        self._changed(STATS)

    def measure_all(self) -> None:
        """Measure every row, not a sample."""
        self._stats_limit = None
        self._changed(STATS)

    def stats_measured(self, stats: Any, *, final: bool) -> None:
        """A partial or the final TokenStats (None: the measurement was cancelled inside)."""
        self.measuring = self.measuring and not final
        self.stats = stats if stats is not None else self.stats
        self._changed(STATS)

    def stats_failed(self, error: BaseException) -> None:
        self.measuring = False
        self.stats_error = f"Token lengths failed: {type(error).__name__}: {error}"
        self._changed(STATS)

    def stats_view(self) -> StatsView:
        stats, data, state = self.stats, self.data, self.read_state
        if stats is not None:
            if self.measuring:
                return StatsView(stats, "", f"Measuring… {stats.measured:,} rows so far.")
            if stats.complete:
                return StatsView(stats, "", f"All {stats.total_rows:,} rows measured in {stats.seconds:.1f} s.")
            return StatsView(stats, "", f"{stats.measured:,} random rows measured in {stats.seconds:.1f} s.",
                             f"Measure all {stats.total_rows:,} rows")
        if not self.shows_conversations and state == "done":
            title = method_data(self.data_method).title
            message = (f"Token lengths are measured for SFT data; {title}'s trainer tokenises each prompt and reply "
                       "itself (see the preview).")
        elif state == "failed":
            message = "No rows to measure: the data cannot be read."
        elif state == "done" and not len(data.examples):
            message = "No rows to measure."
        elif state != "done":
            message = "Token lengths appear once the data is read."
        elif self.tokenizer_error:
            message = f"The tokenizer of {self.model_name} could not be loaded: {self.tokenizer_error}"
        else:
            message = "Token lengths appear once the model's tokenizer is loaded."
        return StatsView(None, message, self.stats_error or ("Measuring token lengths…" if self.measuring else ""))

    # --- the rows and the preview --------------------------------------------------------------------------
    def select_row(self, row: int) -> None:
        if row != self.selected_row and row >= 0:
            self.selected_row = row
            self._changed(PREVIEW)

    def preview(self) -> RowPreview:
        """What the preview shows now: the selected row, or why there is no row to show."""
        data, state = self.data, self.read_state
        if data is not None and len(data.examples):
            shown = self.preview_row(min(self.selected_row, len(data.examples) - 1))
            if shown is not None:
                return shown
        if state == "idle":
            message = "Open a dataset to see its rows as the model will see them."
        elif state == "reading":
            return RowPreview("", message="Reading the data…", info=_grey("No row selected yet."))
        elif state == "failed":
            message = "The data cannot be read; see Problems."
        elif state == "cancelled":
            message = "Reading was cancelled before the first rows; open the file again."
        elif not data.issue_count:
            message = "This data holds no records."
        elif not data.format:
            message = ("No row could be read: the record shape was not recognised. Choose the shape and the columns "
                       "under Columns, then apply.")
        else:
            message = "No row could be read; see Problems."
        return RowPreview("", message=message, info=_grey("No row to show."))

    def preview_row(self, row: int) -> RowPreview | None:
        """The preview of row `row` (0-based) with the model's chat template; None when there is no such row."""
        data = self.data
        if data is None or row < 0 or row >= len(data.examples):
            return None
        example = data.examples[row]
        line = data.lines[row] if row < len(data.lines) else row + 1
        method = method_data(self.data_method)
        unit = "Row" if data.unit == "row" else "Line"
        if not method.conversations:
            where = f"{unit} {line} · {method.title} {method.example}"
        else:
            _, _, turns = example_summary(example)
            where = f"{unit} {line} · {turns} turn(s)"
        model = self.model_name
        if not model:
            return RowPreview(where, message="Choose a model on the Config tab to see this row with its chat "
                                             "template and tokens.", info=where)
        if self.tokenizer_error:
            return RowPreview(where, message=f"The tokenizer of {model} could not be loaded: {self.tokenizer_error}",
                              info=where)
        if self.tokenizer is None:
            return RowPreview(where, message=f"Loading the tokenizer of {model}…", waiting_for_tokenizer=True,
                              info=where)
        from studio.core.data.preview import preview_example
        from studio.core.data.tokens import TemplateError

        try:
            if not method.conversations:
                # TRL's trainers take the loss on the replies only, whatever data.train_on_responses_only says.
                sides = tuple((_side_title(title, preview), preview) for title, preview in (
                    (title, preview_example(self.tokenizer, conversation, train_on_responses_only=True,
                                            max_length=self.max_length))
                    for title, conversation in preference_conversations(example)))
                return RowPreview(where, preview=sides[0][1], sides=sides, info=where)
            preview = preview_example(self.tokenizer, example,
                                      train_on_responses_only=self.settings.train_on_responses_only,
                                      max_length=self.max_length)
        except (TemplateError, ValueError, TypeError) as error:  # a template that rejects this conversation
            return RowPreview(where, message=f"This row cannot be rendered with the model's chat template: {error}",
                              info=where)
        info = (f"{where} · <b>{preview.total_tokens:,}</b> tokens: <b style='color:{GREEN}'>{preview.trained_tokens:,}"
                f" trained</b>, {preview.masked_tokens:,} masked")
        if preview.truncated_tokens:
            info += (f", <b style='color:{RED}'>{preview.truncated_tokens:,} cut</b> by max_length "
                     f"{self.max_length}")
        if not preview.trained_tokens:
            info += f" — <b style='color:{RED}'>nothing in this row is trained</b>"
        return RowPreview(where, preview=preview, info=info)

    # --- the held-out split --------------------------------------------------------------------------------
    def evaluation(self) -> EvaluationView:
        """The eval split as the run will make it: data.eval_auto's split is shown as the fraction it holds out
        (any edit makes it explicit), and "a separate file" stays chosen while its name is being typed."""
        s = self.settings
        rows = len(self.data.examples) if self.data is not None else 0
        fraction = s.eval_fraction or auto_eval_fraction(s, rows)
        choice = ("file" if s.eval_file or self._wants_file_for_eval else "fraction" if fraction > 0 else "none")
        shown = fraction if choice == "fraction" else 0.0
        when = html.escape(describe_evaluation(DataSettings(eval_fraction=shown, eval_file=s.eval_file,
                                                            eval_auto=False), self.training))
        if choice == "fraction" and rows:
            held = held_out_count(rows, fraction)  # as the run's split counts them
            counts = f"{rows - held:,} rows train, {held:,} rows evaluate (drawn with seed {self.seed}). {when}"
        elif s.eval_file:
            exists = Path(s.eval_file).exists()
            counts = (f"All {rows:,} rows train; the eval file is read the same way. {when}" if exists
                      else f"<span style='color:{RED}'>{html.escape(s.eval_file)}: no such file</span>")
        else:
            counts = when
        return EvaluationView(choice, fraction or 0.1, s.eval_file, counts)

    def choose_evaluation(self, choice: str, *, fraction: float = 0.0, file: str = "",
                          source: object | None = None) -> Change | None:
        """The user's choice of eval split. "No evaluation" and "a separate file" are answers: the automatic split
        (data.eval_auto) no longer applies, even while the file's name is still being typed."""
        self._wants_file_for_eval = choice == "file"
        values = {"none": {"eval_fraction": 0.0, "eval_file": "", "eval_auto": False},
                  "fraction": {"eval_fraction": round(fraction, 4), "eval_file": ""},
                  "file": {"eval_fraction": 0.0, "eval_file": file.strip(), "eval_auto": False}}[choice]
        change = self.edit(source=source, **values)
        if change is None:
            self._changed(SETTINGS)
        return change


def _grey(text: str) -> str:
    return f"<span style='color:{GREY}'>{html.escape(text)}</span>"


def _side_title(title: str, preview: Any) -> str:
    colour = GREEN if title.startswith(("Chosen", "Desirable")) else (
        RED if title.startswith(("Rejected", "Undesirable")) else GREY)
    return (f"<b style='color:{colour}'>{html.escape(title)}</b> · {preview.total_tokens:,} tokens, "
            f"{preview.trained_tokens:,} trained")


def preference_conversations(example: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(title, the conversation as `encode_example` takes it) for each reply of a method's example: the prompt
    followed by the chosen and by the rejected reply of a pair, by a kto reply, or a grpo prompt alone (the
    model writes the reply there, so nothing of it is trained)."""
    prompt = list(example["prompt"])
    if "chosen" in example:
        return [("Chosen", {"messages": prompt + list(example["chosen"])}),
                ("Rejected", {"messages": prompt + list(example["rejected"])})]
    if "label" in example:
        title = "Desirable reply" if example["label"] else "Undesirable reply"
        return [(title, {"messages": prompt + list(example["completion"])})]
    return [("Prompt (the model writes the reply)", {"messages": prompt})]
