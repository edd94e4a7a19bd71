"""The Evaluate tab's state, without Qt: what to evaluate, the results as they stream in, what the table shows.

An `EvaluateSession` holds the user's choices — the runs (each a column; the base is one too), the eval set (the
runs' own held-out split, or a data file), the metrics and the regex pattern — and turns them into an `EvalJob`
(studio.core.eval). While `run_eval` works, every scored reply is handed to `add_result`; the session keeps them
and answers what the tab draws: the summary per model per metric (41/47), the per-example rows under a filter
("all", "tuned wrong", "regressions": base right, tuned wrong) and, for a reply, which parts of it (and of the
expected reply) are the mismatch — the wrong argument, the missing call — read from the metric's detail.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.system.tasks import TaskState
from studio.core.eval.cases import HELD_OUT
from studio.core.eval.command import EvalInputError, build_job
from studio.core.eval.results import summarise
from studio.core.eval.runner import BASE_COLUMN, DEFAULT_MAX_NEW_TOKENS, EvalError, EvalJob, EvalOutcome
from studio.core.metrics.registry import DEFAULT_METRICS, METRICS
from studio.core.metrics.tool_calls import expected_tool_calls, extract_tool_calls
from studio.core.models.source import ModelLoadError

ALL, TUNED_WRONG, REGRESSIONS = "all", "tuned wrong", "regressions"
FILTERS = (ALL, TUNED_WRONG, REGRESSIONS)
FILTER_HINTS = {
    ALL: "every example",
    TUNED_WRONG: "a tuned model's reply fails the judging metric",
    REGRESSIONS: "the base model's reply passes and a tuned model's fails: what the fine-tune broke",
}
# Spans in a reply (or the expected reply) that the table marks, by what is wrong there.
WRONG, MISSING, EXTRA = "wrong", "missing", "extra"
DIFF_LIMIT = 4000
"""Characters beyond which no character diff is drawn (a rambling reply cut at max tokens): it would be slow
and mark everything anyway."""


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of a text that are part of the mismatch; `note` says what (a tooltip)."""

    start: int
    end: int
    kind: str
    note: str = ""


@dataclass(frozen=True)
class Highlight:
    """What a table cell marks for one reply under one metric."""

    reply: tuple[Span, ...] = ()
    expected: tuple[Span, ...] = ()
    notes: tuple[str, ...] = ()
    """Mismatches with no place in the reply: a missing argument, a missing call."""
    reason: str = ""


@dataclass
class ExampleRow:
    """One case of the eval set: its prompt, the expected reply and each model's record (as results.jsonl has it)."""

    case: str
    line: int
    prompt: list[dict[str, str]]
    expected: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return next((m["content"] for m in reversed(self.prompt) if m["role"] == "user"), "")

    def passed(self, model: str, metric: str) -> bool | None:
        """The model's verdict on this case under `metric`; None when it has not answered (yet)."""
        score = self.records.get(model, {}).get("scores", {}).get(metric)
        return None if score is None else bool(score["passed"])


@dataclass(frozen=True)
class Count:
    passed: int
    total: int
    expecting_a_call: int | None = None
    """For tool_call: how many of the cases expect a call (the others pass by making none)."""

    @property
    def share(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.passed}/{self.total}"


@dataclass(frozen=True)
class MetricChoice:
    """A metric as the Metrics box offers it."""

    name: str
    title: str
    description: str
    default_on: bool


def metric_choices() -> list[MetricChoice]:
    """Every metric the registry scores with, in its order, ticked by default or not."""
    return [MetricChoice(name, info.title, info.description, name in DEFAULT_METRICS) for name, info in METRICS.items()]


def metric_title(name: str) -> str:
    return METRICS[name].title


EXPECTED_ERRORS: tuple[type[Exception], ...] = (EvalError, ModelLoadError)
"""What an eval ends with that is said in one line (a refused setting, a model that does not load), not a bug."""


NO_FINISHED_RUNS = "No finished runs yet: train one on the Training tab, then evaluate it here."
READY_HINT = "Pick runs and an eval set, then Start."


def runs_list_status(count: int, shown: str) -> str:
    """The status line once the runs list is read again: the empty list's hint only while the list is empty
    (then the first hint again); any other status (a result, a refusal) stays."""
    if count == 0:
        return NO_FINISHED_RUNS
    return READY_HINT if shown == NO_FINISHED_RUNS else shown


@dataclass
class EvaluateSession:
    """The Evaluate tab's choices and results. Call `build_job()` (EvalInputError: a line to show) and give
    the job's callbacks to `start`, `add_result`, `progressed` and `finish`."""

    runs: list[Path] = field(default_factory=list)
    """Run directories, each a column, in the order chosen; the first one's base is loaded."""
    include_base: bool = True
    eval_source: str = HELD_OUT
    """HELD_OUT (the runs' own held-out split) or a data file, saved dataset folder or Hub id."""
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    pattern: str = ""
    last_turn_only: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    judge: str = ""
    """The metric the filters and the highlights follow (empty: tool_call if chosen, else the first)."""

    columns: list[str] = field(default_factory=list)
    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    job: EvalJob | None = None
    outcome: EvalOutcome | None = None
    done: int = 0
    total: int = 0
    message: str = ""
    _order: dict[str, int] = field(default_factory=dict, repr=False)

    # --- choices ----------------------------------------------------------------------------------------------
    def set_runs(self, runs: Sequence[Path]) -> None:
        self.runs = [Path(run) for run in runs]

    def choose_eval_set(self, source: str | None) -> None:
        """A data file (saved dataset folder, Hub id) to evaluate on; None: the first run's held-out split."""
        self.eval_source = HELD_OUT if source is None else source

    def problem(self) -> str | None:
        """Why Start cannot run with these choices (before anything is read or loaded), or None."""
        if not self.runs:
            return "Pick at least one run to evaluate."
        if not self.metrics and not self.pattern.strip():
            return "Pick at least one metric."
        if "regex" in self.metrics and not self.pattern.strip():
            return "The regex metric needs a pattern."
        bases = {}
        from studio.core.sessions.chat import run_adapter

        for run in self.runs:
            bases[run] = run_adapter(run)[1]
        if len({base for base in bases.values() if base}) > 1:
            first, *_ = self.runs
            other = next(run for run in self.runs if bases[run] and bases[run] != bases[first])
            return (f"{other.name} was trained on {bases[other]}, {first.name} on {bases[first]}: "
                    "the runs of one eval share one base model.")
        if self.eval_source == HELD_OUT:
            return self._held_out_problem(self.runs[0])
        if not self.eval_source.strip():
            return "Choose a data file as the eval set."
        return None

    @staticmethod
    def _held_out_problem(run: Path) -> str | None:
        from studio.core.config.settings import ConfigError, load_config

        try:
            config = load_config(run / "run.toml")
        except ConfigError as error:
            return str(error)
        if not config.data.eval_file and config.data.eval_fraction <= 0:
            return (f"{run.name} held out no examples (no eval file, eval fraction 0): choose a data file "
                    "as the eval set.")
        return None

    @property
    def judging_metric(self) -> str:
        names = self.metric_names()
        if self.judge in names:
            return self.judge
        return "tool_call" if "tool_call" in names else (names[0] if names else "")

    def metric_names(self) -> list[str]:
        """The metrics scored, in the registry's order (the regex one when a pattern is given)."""
        wanted = set(self.metrics) | ({"regex"} if self.pattern.strip() else set())
        return [name for name in METRICS if name in wanted]

    def build_job(self) -> EvalJob:
        """The EvalJob of these choices; EvalInputError (one line) for anything the user must change."""
        if (problem := self.problem()) is not None:
            raise EvalInputError(problem)
        first, *others = self.runs
        return build_job(first, data=None if self.eval_source == HELD_OUT else self.eval_source,
                         metrics=self.metric_names(), pattern=self.pattern.strip() or None,
                         base=self.include_base, adapters=others, last_turn=self.last_turn_only,
                         max_new_tokens=self.max_new_tokens)

    def evaluate(self, *, task: TaskState) -> EvalOutcome:
        """Build the job and run it (a background thread's work): `task.partial` gets ("job", job), ("start", columns,
        kept) and ("result", record) as they come, for `start`, `started` and `add_result` on the tab's thread."""
        from studio.core.eval.runner import run_eval

        job = self.build_job()  # reads the eval set: off the GUI thread
        task.partial(("job", job))
        return run_eval(job, task=task, on_result=lambda record: task.partial(("result", record)),
                        on_start=lambda columns, kept: task.partial(("start", columns, kept)))

    # --- the eval as it runs ------------------------------------------------------------------------------------
    def start(self, job: EvalJob) -> None:
        """A new eval of `job`: the rows are its cases, nothing answered yet."""
        self.job, self.outcome = job, None
        self.records = {}
        self.columns = []
        self._order = {case.id: i for i, case in enumerate(job.eval_set.cases)}
        self.done, self.total = 0, len(job.eval_set.cases)
        self.message = f"Evaluating {len(job.eval_set.cases)} cases of {job.eval_set.source}…"

    def started(self, columns: Sequence[str], kept: Sequence[dict[str, Any]]) -> None:
        """run_eval's on_start: the columns, and the results an interrupted run of the same eval left."""
        self.columns = list(columns)
        for record in kept:
            self.add_result(record)

    def add_result(self, record: dict[str, Any]) -> None:
        self.records[(record["model"], record["case"])] = record
        if record["model"] not in self.columns:
            self.columns.append(record["model"])

    def progressed(self, done: int, total: int, message: str) -> None:
        self.done, self.total, self.message = done, total, message

    def finish(self, outcome: EvalOutcome) -> None:
        """The eval returned (completed, or cancelled with its results so far on disk)."""
        self.outcome = outcome
        self.columns = list(outcome.columns)
        resumed = f", {outcome.resumed} kept from the last run" if outcome.resumed else ""
        if outcome.status == "completed":
            self.message = (f"Done: {outcome.summary['cases']} cases × {len(outcome.columns)} models "
                            f"({outcome.generated} answered now{resumed}). Results in {outcome.folder}")
            if (beside := outcome.summary.get("written_beside")) is not None:
                self.message += (f" — a new folder: {Path(beside['folder']).name} holds an eval with other settings "
                                 f"({beside['because']})")
            cut = max((m.get("prompts_cut", 0) for m in outcome.summary["models"].values()), default=0)
            if cut:
                self.message += f". {cut} prompt{'s' if cut > 1 else ''} longer than the context kept their last tokens"
        else:
            self.message = f"Cancelled at {self.done}/{self.total}: Start resumes from there."

    def cancelled(self) -> None:
        self.message = f"Cancelled at {self.done}/{self.total}: Start again to resume from there."

    @property
    def base_column(self) -> str | None:
        return BASE_COLUMN if BASE_COLUMN in self.columns and self.include_base else None

    @property
    def tuned_columns(self) -> list[str]:
        return [column for column in self.columns if column != self.base_column]

    # --- what the tab shows ---------------------------------------------------------------------------------------
    def summary(self) -> dict[str, dict[str, Count]]:
        """Per model, per metric: how many of its replies so far passed."""
        names = self.metric_names()
        models = summarise(list(self.records.values()), self.columns, names)
        return {model: {metric: Count(entry["metrics"][metric]["passed"], entry["metrics"][metric]["total"],
                                      entry["metrics"][metric].get("cases_expecting_a_call"))
                        for metric in names} for model, entry in models.items()}

    def metric_titles(self) -> dict[str, str]:
        """Each scored metric's name as the chart labels it; tool_call's says how many cases expect a call, so a
        full bar earned on cases that expect none is never taken for a learned call."""
        titles = {name: METRICS[name].title for name in self.metric_names()}
        expecting = [count.expecting_a_call for counts in self.summary().values() for name, count in counts.items()
                     if name == "tool_call" and count.expecting_a_call is not None]
        if "tool_call" in titles and expecting:
            titles["tool_call"] += f" ({max(expecting)} expect a call)"
        return titles

    def rows(self, which: str = ALL) -> list[ExampleRow]:
        """The examples (in the eval set's order) that `which` (one of FILTERS) keeps, judged by judging_metric."""
        if which not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}, not {which!r}")
        rows: dict[str, ExampleRow] = {}
        for (model, case), record in self.records.items():
            row = rows.get(case)
            if row is None:
                row = rows[case] = ExampleRow(case, int(record.get("line") or 0), list(record["prompt"]),
                                              record["expected"])
            row.records[model] = record
        ordered = sorted(rows.values(), key=lambda r: (self._order.get(r.case, len(self._order)), r.line, r.case))
        return [row for row in ordered if self.keeps(row, which)]

    def keeps(self, row: ExampleRow, which: str) -> bool:
        metric = self.judging_metric
        tuned_wrong = any(row.passed(column, metric) is False for column in self.tuned_columns)
        if which == TUNED_WRONG:
            return tuned_wrong
        if which == REGRESSIONS:
            return self.base_column is not None and row.passed(self.base_column, metric) is True and tuned_wrong
        return True

    def highlight(self, record: dict[str, Any], metric: str | None = None) -> Highlight:
        """What is wrong in one reply under `metric` (default: the judging metric); empty when it passed."""
        metric = metric or self.judging_metric
        score = record.get("scores", {}).get(metric)
        if score is None or score["passed"]:
            return Highlight()
        detail = score.get("detail") or {}
        reason = str(detail.get("reason", ""))
        if metric == "tool_call":
            return tool_call_highlight(record["reply"], record["expected"], detail)
        if metric in ("exact", "normalised", "normalised_tr", "chrf", "contains"):
            reply, expected = diff_spans(record["reply"], record["expected"])
            return Highlight(reply, expected, reason=reason)
        return Highlight(reason=reason)

    def column_runs(self) -> dict[str, Path]:
        """The run behind each tuned column, named as ChatModel names its adapters (the run's folder)."""
        from studio.core.models.adapters import adapter_display_name

        names: dict[str, Path] = {}
        for run in self.runs:
            name, n = adapter_display_name(Path(run) / "adapter"), 2
            while name in names:
                name, n = f"{adapter_display_name(Path(run) / 'adapter')}_{n}", n + 1
            names[name] = Path(run)
        return names

    def chat_target(self, model: str) -> Path | None:
        """The run a column's replies came from, for "Open in Chat"; None for the base column."""
        return None if model == self.base_column else self.column_runs().get(model)

    def base_model(self) -> str:
        """The base model the runs were trained on (what the base column answers with)."""
        from studio.core.sessions.chat import run_adapter

        return next((base for run in self.runs if (base := run_adapter(run)[1])), "")


# --- highlights ---------------------------------------------------------------------------------------------------


def segments(text: str, spans: Sequence[Span]) -> list[tuple[str, Span | None]]:
    """The text cut into pieces, each with the span that marks it (None: unmarked); overlaps keep the first."""
    pieces: list[tuple[str, Span | None]] = []
    position = 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        start, end = max(span.start, position), min(span.end, len(text))
        if end <= start:
            continue
        if start > position:
            pieces.append((text[position:start], None))
        pieces.append((text[start:end], span))
        position = end
    if position < len(text):
        pieces.append((text[position:], None))
    return pieces


def diff_spans(reply: str, expected: str) -> tuple[tuple[Span, ...], tuple[Span, ...]]:
    """Where reply and expected differ, word by word (difflib on words and the spaces between), on each side:
    "20:00" against "22:00" marks the whole time, not one digit."""
    if len(reply) > DIFF_LIMIT or len(expected) > DIFF_LIMIT:
        return (), ()
    ours_words, theirs_words = _words(reply), _words(expected)
    matcher = difflib.SequenceMatcher(None, [w for w, _ in ours_words], [w for w, _ in theirs_words],
                                      autojunk=False)
    ours, theirs = [], []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if a1 > a0:
            ours.append(Span(ours_words[a0][1], ours_words[a1 - 1][1] + len(ours_words[a1 - 1][0]),
                             EXTRA if tag == "delete" else WRONG))
        if b1 > b0:
            theirs.append(Span(theirs_words[b0][1], theirs_words[b1 - 1][1] + len(theirs_words[b1 - 1][0]),
                               MISSING if tag == "insert" else WRONG))
    return tuple(ours), tuple(theirs)


def _words(text: str) -> list[tuple[str, int]]:
    return [(match.group(0), match.start()) for match in re.finditer(r"\w+|[^\w\s]|\s+", text)]


def _value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _find_argument(text: str, start: int, name: str, value: Any) -> tuple[int, Span] | None:
    """Where argument `name` is written in the call starting at `start` (JSON or keyword form): where its key
    starts, and its value's span (the key itself when the value is not found as written)."""
    for key in (f'"{name}"', f"{name}="):
        at = text.find(key, start)
        if at < 0:
            continue
        after = at + len(key)
        for written in (_value_text(value), repr(value), str(value)):
            found = text.find(written, after)
            if found >= 0 and text[after:found].strip(" :=\t") == "":
                return at, Span(found, found + len(written), WRONG)
        return at, Span(at, after, WRONG)
    return None


def _find_call(text: str, start: int, name: str | None) -> Span:
    """The function name of a call (or a short piece from its start when it has none)."""
    if name:
        at = text.find(name, start)
        if at >= 0:
            return Span(at, at + len(name), WRONG)
    return Span(start, min(len(text), start + 12), WRONG)


def tool_call_highlight(reply: str, expected: str, detail: dict[str, Any]) -> Highlight:
    """The tool-call metric's detail placed on the texts: a wrong argument's value in the reply (and the value
    it should have been in the expected reply), an extra argument, a wrong function name, a call that does not
    parse; a missing argument or call has no place in the reply and becomes a note (and is marked where the
    expected reply has it)."""
    reason = str(detail.get("reason", ""))
    got_calls = extract_tool_calls(reply)
    want_calls = expected_tool_calls(expected)
    ours: list[Span] = []
    theirs: list[Span] = []
    notes: list[str] = []
    used: set[int] = set()
    for index, comparison in enumerate(detail.get("calls", [])):
        want = want_calls[index] if index < len(want_calls) else None
        got_info = comparison.get("got")
        name = comparison["expected"].get("name")
        if got_info is None:
            notes.append(f"missing call: {name}")
            if want is not None:
                theirs.append(Span(want.start, _call_end(expected, want.start), MISSING,
                                   "the reply makes no such call"))
            continue
        got = next((c for i, c in enumerate(got_calls) if i not in used and c.name == got_info.get("name")), None)
        if got is None:
            continue
        used.add(got_calls.index(got))
        if not comparison.get("right_function"):
            spot = _find_call(reply, got.start, got.name)
            ours.append(Span(spot.start, spot.end, WRONG, f"expected {name}"))
            continue
        if not comparison.get("valid_json"):
            ours.append(Span(got.start, _call_end(reply, got.start), WRONG, got.error or "does not parse"))
            continue
        for argument in comparison.get("arguments", []):
            status, key = argument["status"], argument["name"]
            found = _find_argument(reply, got.start, key, argument.get("got"))
            wanted = None if want is None else _find_argument(expected, want.start, key, argument.get("expected"))
            if status == "wrong":
                if found is not None:
                    ours.append(Span(found[1].start, found[1].end, WRONG,
                                     f"{key}: expected {_value_text(argument['expected'])}"))
                if wanted is not None:
                    theirs.append(Span(wanted[1].start, wanted[1].end, WRONG,
                                       f"{key}: the reply has {_value_text(argument['got'])}"))
            elif status == "extra" and found is not None:
                ours.append(Span(found[0], found[1].end, EXTRA, f"extra argument {key}"))
            elif status == "missing":
                notes.append(f"missing argument {key} = {_value_text(argument['expected'])}")
                if wanted is not None:
                    theirs.append(Span(wanted[0], wanted[1].end, MISSING, f"the reply lacks {key}"))
    for extra in detail.get("extra_calls", []):
        call = next((c for i, c in enumerate(got_calls) if i not in used and c.name == extra.get("name")), None)
        if call is not None:
            used.add(got_calls.index(call))
            ours.append(Span(call.start, _call_end(reply, call.start), EXTRA, "a call not expected"))
    if not detail.get("calls") and detail.get("got"):  # no call expected, the reply made some
        ours += [Span(c.start, _call_end(reply, c.start), EXTRA, "no call was expected") for c in got_calls]
    if not got_calls and want_calls and not notes:
        notes.append("no tool call in the reply")
    return Highlight(tuple(ours), tuple(theirs), tuple(notes), reason)


def _call_end(text: str, start: int) -> int:
    """The end of the call written at `start`: its closing tag, else the end of its line."""
    for closing in ("</tool_code>", "</tool_call>", "```"):
        at = text.find(closing, start + 1)
        if at >= 0:
            return at + len(closing)
    line_end = text.find("\n", start)
    return len(text) if line_end < 0 else line_end
