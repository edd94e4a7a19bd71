"""The data of the methods that read records of their own (preference pairs, labelled replies, prompts): read,
checked and held out as TRL takes it. Each method's settings half says which records it reads (`DataShape`).

The same sources, column mapping, encodings and `file:line: reason` issues as SFT data
(`core.data.loading`), but the examples stay in TRL's conversational form (prompt turns plus chosen and
rejected replies, or a labelled completion, or a prompt with its expected reply): TRL's trainers
tokenise those themselves with the model's chat template. A pair whose two replies are the same is a bad
row; a set with one label only, for a method that learns from both, cannot be trained and says so.

Preference sets are far smaller than SFT corpora (each row is written or judged by someone), so the
examples are held as a list and handed to `datasets` in one go.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.data.issues import DataError, DataIssue
from studio.core.data.normalise import normalise_preference, unpair
from studio.core.data.shape import FORMAT_NAMES, PREFERENCE_FORMAT_NAMES, _apply_mapping, parse_column_mapping
from studio.core.data.sources import BrokenDocumentError, open_records, resolve_source
from studio.core.data.split import held_out_split
from studio.core.data.table import LoadedData
from studio.core.methods.registry import method as method_spec
from studio.core.runs.events import make_event
from studio.core.system.tasks import NO_TASK, TaskState

MAX_KEPT_ISSUES = 1000


@dataclass
class PreferenceData:
    """A method's examples in TRL's form, with the source line of each and every problem found."""

    path: str
    method: str
    format: str
    """The shape most records were read as (a PREFERENCE_FORMATS name, or an SFT FORMATS name for a method that
    takes a chat record's last reply as the expected one)."""
    evidence: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    issue_total: int = 0
    unit: str = "line"
    source_kind: str = ""

    @property
    def issue_count(self) -> int:
        return max(self.issue_total, len(self.issues))

    def as_loaded_data(self, encoding: str) -> LoadedData:
        """These examples as the data layer's LoadedData, for what shows data whatever the method (the Dataset
        tab's table, `data inspect`'s report): read by this reader, so they show what the run will train on."""
        return LoadedData(path=Path(self.path), format=self.format, evidence=self.evidence, examples=self.examples,
                          lines=self.lines, issues=self.issues, source_kind=self.source_kind, encoding=encoding,
                          issue_total=self.issue_total, unit=self.unit)

    def labels(self) -> Counter[bool]:
        return Counter(bool(e["label"]) for e in self.examples if "label" in e)

    def to_dataset(self, indices: list[int] | None = None) -> Any:
        import datasets

        rows = self.examples if indices is None else [self.examples[i] for i in indices]
        return datasets.Dataset.from_list(rows)


def load_preference_data(path: str | Path, method: str, *, mapping: Mapping[str, str] | list[str] | None = None,
                         encoding: str = "utf-8", split: str = "train",
                         task: TaskState = NO_TASK) -> PreferenceData:
    """Read a whole source for `method`, collecting every bad row as a DataIssue (unreadable source: DataError;
    InterruptedError once `task.cancelled()`)."""
    shape = method_spec(method).data
    if shape.detect is None:
        raise ValueError(f"{method} reads SFT data (core.data.loading), not records of its own")
    source = resolve_source(path)
    try:
        columns = parse_column_mapping(mapping)
    except ValueError as error:
        raise DataError(f"{source.label}: {error}") from None
    stream = open_records(source, encoding=encoding, split=split)
    data = PreferenceData(path=str(source.label), method=method, format="", evidence="", unit=source.unit,
                          source_kind=source.kind)
    shapes: Counter[str] = Counter()
    evidence: dict[str, str] = {}

    def add_issue(line: int, reason: str) -> None:
        data.issue_total += 1
        if len(data.issues) < MAX_KEPT_ISSUES:
            data.issues.append(DataIssue(source.label, line, reason, source.unit))

    try:
        for number, item in enumerate(stream, start=1):
            if number % 500 == 0 and task.cancelled():
                raise InterruptedError("reading was cancelled")
            if isinstance(item, DataIssue):
                add_issue(item.line, item.reason)
                continue
            line, record = item
            try:
                record = _apply_mapping(record, columns) if columns and isinstance(record, dict) else record
                fmt, why = shape.detect(record)
                examples = normalise_preference(record, fmt)
            except ValueError as error:
                add_issue(line, str(error))
                continue
            shapes[fmt] += 1
            evidence.setdefault(fmt, why)
            if shape.unpair and fmt == "preference":
                examples = [half for example in examples for half in unpair(example)]
            data.examples.extend(examples)
            data.lines.extend([line] * len(examples))
    except BrokenDocumentError as broken:  # a JSON document that does not parse: none of it can be trusted
        data.examples.clear()
        data.lines.clear()
        data.issues[:] = [broken.issue]
        data.issue_total = 1
    if shapes:
        data.format = shapes.most_common(1)[0][0]
        names = {**FORMAT_NAMES, **PREFERENCE_FORMAT_NAMES}
        data.evidence = evidence[data.format] + "".join(
            f"; {n} read as {names[f]}" for f, n in shapes.most_common() if f != data.format)
    return data


def require_preference_trainable(data: PreferenceData, *, skip_bad_rows: bool) -> PreferenceData:
    """The data itself, or a DataError: bad rows (unless skipped), no rows, or one label only for a method that
    learns from the difference between desirable and undesirable replies."""
    if data.issues and not skip_bad_rows:
        raise DataError(f"{data.path}: {data.issue_count} bad row(s) for {data.method}", data.issues,
                        total=data.issue_count)
    if not data.examples:
        raise DataError(f"{data.path}: no usable examples for {data.method}"
                        + (f" ({data.issue_count} bad row(s))" if data.issues else ""), data.issues,
                        total=data.issue_count)
    if method_spec(data.method).data.needs_both_labels:
        labels = data.labels()
        if len(labels) < 2:
            only = "desirable (true)" if True in labels else "undesirable (false)"
            raise DataError(f"{data.path}: every one of the {len(data.examples)} rows is labelled {only}; "
                            f"{data.method} learns from the difference between desirable and undesirable replies, "
                            "so it needs both")
    return data


def preference_training_data(settings: Any, method: str, path: str | Path | None = None, *,
                             emit: Callable[[dict], None] | None = None) -> PreferenceData:
    """Read a data file with the run's data settings for `method`; skipped bad rows are logged, never silent."""
    data = require_preference_trainable(
        load_preference_data(path if path is not None else settings.train_file, method,
                             mapping=settings.column_mapping, encoding=settings.encoding, split=settings.split),
        skip_bad_rows=settings.skip_bad_rows)
    if emit is not None:
        emit(make_event("log", level="info", message=f"{data.path}: {len(data.examples)} example(s) for "
                                                     f"{method}, read as {data.evidence}"))
        if data.issues:
            shown = "\n".join(str(issue) for issue in data.issues[:10])
            more = f"\n… and {data.issue_count - 10} more" if data.issue_count > 10 else ""
            emit(make_event("log", level="warning",
                            message=f"Skipping {data.issue_count} bad row(s) of {data.path} "
                                    f"(data.skip_bad_rows is on):\n{shown}{more}"))
    return data


def preference_splits(config: Any, train: PreferenceData, eval_data: PreferenceData | None) -> tuple[Any, Any]:
    """(train_set, eval_set) as `datasets.Dataset`s: the eval file's rows, or the seeded held-out fraction (the
    same rows `core.data.split` holds out for SFT), or none."""
    if eval_data is not None:
        return train.to_dataset(), eval_data.to_dataset()
    if config.data.eval_fraction > 0:
        if len(train.examples) < 2:
            raise DataError(f"{train.path}: {len(train.examples)} row(s) cannot be split for evaluation; "
                            "set data.eval_fraction = 0 or give an eval file")
        kept, held_out = held_out_split(len(train.examples), config.data.eval_fraction, config.training.seed)
        return train.to_dataset(list(kept)), train.to_dataset(list(held_out))
    return train.to_dataset(), None
