"""What the Dataset tab chose and read: the source and how it is read (kept in the run draft), the rows read,
the model's tokenizer, the token-length statistics, and the background tasks that produce them.

The data settings live in the one `RunDraft` the Config tab edits too; this session writes every data edit
into it. The tasks (`read_source`, `load_model_tokenizer`, `measure_lengths`) are plain functions of a request
and a `core.system.tasks.TaskState` (`progress(...)`, `partial(value)`, `cancelled()`; the window's is
`studio.ui.background.TaskState`); `importing` is how they import the heavy libraries (the window pauses garbage
collection then).

For a method beyond SFT (training.method dpo, orpo, kto, grpo) the source is read by
`core.train.preference_data.load_preference_data`, the reader the run itself uses, so the rows, the shape and
the `file:line: reason` problems shown are the ones that train; the preview renders each pair's chosen and
rejected reply after the prompt with the model's chat template, the reply's tokens trained as TRL trains them.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from studio.core.config.settings import DataSettings, TrainingSettings
from studio.core.data.issues import DataError
from studio.core.data.loading import ScanCancelled, load_data
from studio.core.data.shape import FORMAT_NAMES, PREFERENCE_FORMAT_NAMES, format_column_mapping, parse_column_mapping
from studio.core.data.table import LoadedData
from studio.core.sessions.draft import Change, RunDraft
from studio.core.system.tasks import TaskState, reporting

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
_NEW_SOURCE = {"format": "auto", "column_mapping": [], "encoding": "utf-8", "skip_bad_rows": False,
               "split": "train", "text_split": "blank_lines"}

Importing = Callable[[], AbstractContextManager]


METHOD_TITLES = {"sft": "SFT", "dpo": "DPO", "orpo": "ORPO", "kto": "KTO", "grpo": "GRPO"}


def format_name(fmt: str) -> str:
    """A detected shape's name, SFT's or a preference method's."""
    return {**FORMAT_NAMES, **PREFERENCE_FORMAT_NAMES}.get(fmt, fmt)


def table_headers(method: str, unit: str = "line") -> tuple[str, ...]:
    """The Dataset tab's columns for the data of `method` (the first is the source line or row)."""
    where = "Row" if unit == "row" else "Line"
    return (where, *{"dpo": ("Prompt", "Chosen", "Rejected"), "orpo": ("Prompt", "Chosen", "Rejected"),
                     "kto": ("Prompt", "Completion", "Label"), "grpo": ("Prompt", "Expected reply")}.get(
        method, ("Turns", "Prompt", "Response")))


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
    method: str = "sft"
    """training.method: beyond SFT the source is read as that method's training reads it."""

    @classmethod
    def of(cls, data: DataSettings, method: str = "sft") -> ReadRequest:
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

    if request.method != "sft":
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
    from studio.core.train.preference_data import load_preference_data

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


# --------------------------------------------------------------------------------------------- the session


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


class DatasetSession:
    """The Dataset tab's state; its data settings are the draft's, so the Config tab sees every edit."""

    def __init__(self, draft: RunDraft | None = None):
        self.draft = draft if draft is not None else RunDraft()
        self.data: LoadedData | None = None
        self.file_error = ""
        self.stats: Any = None
        self.tokenizer: Any = None
        self.tokenizer_name = ""
        self.tokenizer_error = ""
        self.last_read: ReadRequest | None = None
        self._model = ""

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

    def edit(self, *, source: object | None = None, **values: Any) -> Change | None:
        """Write data settings into the draft (one notification, none when nothing changes)."""
        return self.draft.update("data", source=source, **values)

    def open(self, spec: str, *, source: object | None = None) -> bool:
        """Choose a source; a different one starts with automatic detection, UTF-8, no column mapping, the train
        split and bad rows refused. Returns whether it is a different source."""
        if spec == self.settings.train_file:
            return False
        self.edit(source=source, train_file=spec, **_NEW_SOURCE)
        return True

    def apply_mapping(self, fmt: str, mapping: dict[str, str], *, source: object | None = None) -> None:
        self.edit(source=source, format=fmt, column_mapping=format_column_mapping(mapping))

    def mapping(self) -> dict[str, str]:
        """The column mapping as field → column ({} while it cannot be parsed)."""
        try:
            return parse_column_mapping(self.settings.column_mapping)
        except ValueError:
            return {}

    # --- reading -------------------------------------------------------------------------------------------
    def needs_read(self, *, reading: bool) -> bool:
        """Whether the source must be read (again): a setting that decides what is read changed since the last
        read, or nothing has been read, is being read or has failed."""
        if not self.settings.train_file:
            return False
        if self.last_read != ReadRequest.of(self.settings, self.method):
            return True
        return self.data is None and not reading and not self.file_error

    def forget_source(self) -> bool:
        """The draft names no source any more (a continuation with DPO clears the SFT run's chat data, which holds no
        pairs): what was read from the old source no longer describes the run's data. True when something was
        forgotten."""
        if self.settings.train_file or (self.last_read is None and self.data is None and not self.file_error):
            return False
        self.data, self.stats, self.file_error, self.last_read = None, None, "", None
        return True

    def no_source_text(self) -> str:
        """What the tab says with no source chosen: what to open, for the method the run trains with."""
        from studio.core.sessions.config import method_data_note

        return f"No dataset open. {method_data_note(self.method)} Open a file, a saved dataset folder or a Hub id."

    def begin_read(self) -> ReadRequest:
        """Forget what was read and measured; the request of the read that starts now."""
        self.data, self.stats, self.file_error = None, None, ""
        self.last_read = ReadRequest.of(self.settings, self.method)
        return self.last_read

    def read_failed(self, error: DataError) -> None:
        self.data = None
        self.file_error = str(error)

    # --- the tokenizer -------------------------------------------------------------------------------------
    def follow_model(self) -> bool:
        """True when the model changed since the last call: its tokenizer and the statistics are forgotten."""
        if self.model_name == self._model:
            return False
        self._model = self.model_name
        self.tokenizer, self.tokenizer_name, self.tokenizer_error = None, "", ""
        self.stats = None
        return True

    def wants_tokenizer(self) -> bool:
        """A model is chosen whose tokenizer is neither loaded nor known to fail."""
        name = self.model_name
        return bool(name) and self.tokenizer_name != name and not self.tokenizer_error

    def tokenizer_loaded(self, name: str, tokenizer: Any) -> bool:
        """Keep a loaded tokenizer; False (and nothing kept) when the model changed meanwhile."""
        if name != self.model_name:
            return False
        self.tokenizer, self.tokenizer_name = tokenizer, name
        return True

    def tokenizer_failed(self, name: str, error: BaseException) -> bool:
        if name != self.model_name:
            return False
        self.tokenizer_error = tokenizer_failure(error)
        return True

    # --- statistics and the preview --------------------------------------------------------------------------
    def stats_request(self, limit: int | None = STATS_SAMPLE_ROWS) -> StatsRequest | None:
        """What to measure, or None while there is nothing to measure (no complete data, no tokenizer)."""
        data = self.data
        if data is None or not data.complete or not len(data.examples) or self.tokenizer is None:
            return None
        if self.data_method != "sft":
            return None  # the histogram measures SFT examples; TRL's trainers tokenise the others themselves
        return StatsRequest(self.model_name, data, self.settings.train_on_responses_only, self.max_length, limit,
                            self.trust_remote_code)

    def preview_row(self, row: int) -> RowPreview | None:
        """The preview of row `row` (0-based) with the model's chat template; None when there is no such row."""
        data = self.data
        if data is None or row < 0 or row >= len(data.examples):
            return None
        example = data.examples[row]
        line = data.lines[row] if row < len(data.lines) else row + 1
        method = self.data_method
        if method != "sft":
            where = f"{'Row' if data.unit == 'row' else 'Line'} {line} · {METHOD_TITLES[method]} {_KINDS[method]}"
        else:
            _, _, turns = example_summary(example)
            where = f"{'Row' if data.unit == 'row' else 'Line'} {line} · {turns} turn(s)"
        model = self.model_name
        if not model:
            return RowPreview(where, message="Choose a model on the Config tab to see this row with its chat "
                                             "template and tokens.")
        if self.tokenizer_error:
            return RowPreview(where, message=f"The tokenizer of {model} could not be loaded: {self.tokenizer_error}")
        if self.tokenizer is None:
            return RowPreview(where, message=f"Loading the tokenizer of {model}…", waiting_for_tokenizer=True)
        from studio.core.data.preview import preview_example
        from studio.core.data.tokens import TemplateError

        try:
            if method != "sft":
                # TRL's trainers take the loss on the replies only, whatever data.train_on_responses_only says.
                sides = tuple((title, preview_example(self.tokenizer, conversation, train_on_responses_only=True,
                                                      max_length=self.max_length))
                              for title, conversation in preference_conversations(example))
                return RowPreview(where, preview=sides[0][1], sides=sides)
            preview = preview_example(self.tokenizer, example,
                                      train_on_responses_only=self.settings.train_on_responses_only,
                                      max_length=self.max_length)
        except (TemplateError, ValueError, TypeError) as error:  # a template that rejects this conversation
            return RowPreview(where, message=f"This row cannot be rendered with the model's chat template: {error}")
        return RowPreview(where, preview=preview)


_KINDS = {"dpo": "pair", "orpo": "pair", "kto": "reply", "grpo": "prompt"}


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
