"""Eval sets: which prompts are asked and which replies are expected.

A case is one assistant turn: the turns before it are the prompt, its text is the expected reply. In a
multi-turn conversation every assistant turn is a case (`turns="all"`), or only the last (`turns="last"`).

A run's own eval set is what its training held out and never trained on: the rows of data.eval_file, or
the data.eval_fraction split, reproduced here exactly as prepare.encode_splits makes it (datasets'
`train_test_split` with training.seed on one row per example: the split depends only on the row count,
the fraction and the seed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from studio.core.data.issues import DataError

TURNS = ("all", "last")
HELD_OUT = "held-out"
"""The eval set name of a run's own held-out split."""


class EvalSetError(ValueError):
    """An eval set that cannot be used (no assistant turns, a run that held nothing out); names the source."""


@dataclass(frozen=True)
class EvalCase:
    """One prompt and the reply expected to it."""

    id: str
    """Stable within its eval set: "<source row>" or "<source row>.<turn>" for a conversation's later turns."""
    prompt: tuple[dict[str, str], ...]
    expected: str
    line: int = 0

    @property
    def key(self) -> str:
        """A fingerprint of the prompt and the expected reply: a resumed eval keeps a result only for the same case."""
        text = json.dumps([list(self.prompt), self.expected], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def question(self) -> str:
        """The last user turn, for a table."""
        return next((m["content"] for m in reversed(self.prompt) if m["role"] == "user"), "")

    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.prompt]


@dataclass
class EvalSet:
    name: str
    source: str
    """Where the cases came from, in words (a file, or "held-out split of RUN")."""
    cases: list[EvalCase]


def cases_from_examples(examples: Sequence[dict[str, Any]], lines: Sequence[int] | None = None, *,
                        turns: str = "all") -> list[EvalCase]:
    """The cases of normalised examples (studio.core.data: {"messages": [...]} or {"text": ...}); text rows have
    no assistant turn and give none."""
    if turns not in TURNS:
        raise ValueError(f"turns must be one of {', '.join(TURNS)}, not {turns!r}")
    cases = []
    for index, example in enumerate(examples):
        messages = example.get("messages") if isinstance(example, dict) else None
        if not messages:
            continue
        line = int(lines[index]) if lines is not None and index < len(lines) else index + 1
        # An assistant turn that opens a conversation has no prompt to answer.
        assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and i > 0]
        numbered = list(enumerate(assistant, start=1))
        for number, at in numbered[-1:] if turns == "last" else numbered:
            prompt = tuple({"role": m["role"], "content": m["content"]} for m in messages[:at])
            case_id = str(line) if len(assistant) == 1 else f"{line}.{number}"
            cases.append(EvalCase(case_id, prompt, messages[at]["content"], line))
    return cases


def _require_cases(cases: list[EvalCase], source: str) -> list[EvalCase]:
    if not cases:
        raise EvalSetError(f"{source}: no assistant turns to evaluate (every case is a prompt and the "
                           "assistant reply expected to it)")
    return cases


def load_eval_set(source: str | Path, *, fmt: str = "auto", mapping: Any = None, split: str = "train",
                  turns: str = "all", name: str | None = None) -> EvalSet:
    """Any data file, saved dataset folder or Hub id in a shape the Dataset tab reads; bad rows are an error
    naming the first (DataError), as in `finetune-studio data inspect`."""
    from studio.core.data.loading import load_data, require_trainable

    data = require_trainable(load_data(source, fmt, mapping=mapping, split=split), skip_bad_rows=False)
    label = str(data.path)
    cases = _require_cases(cases_from_examples(data.examples, data.lines, turns=turns), label)
    return EvalSet(name or Path(str(source)).stem or "eval", label, cases)


def held_out_set(run_dir: Path, *, turns: str = "all") -> EvalSet:
    """The run's held-out split: the eval file's rows, or the eval fraction of its training rows."""
    from studio.core.config.settings import ConfigError, load_config
    from studio.core.data.grow.record import split_refusal
    from studio.core.data.loading import training_data
    from studio.core.data.split import held_out_split

    run_dir = Path(run_dir)
    try:
        config = load_config(run_dir / "run.toml")
    except ConfigError as error:
        raise EvalSetError(str(error)) from None
    label = f"held-out split of {run_dir.name}"
    if config.data.eval_file:
        data = training_data(config.data, config.data.eval_file)
        cases = cases_from_examples(data.examples, data.lines, turns=turns)
        return EvalSet(HELD_OUT, f"{label} ({data.path})", _require_cases(cases, str(data.path)))
    if config.data.eval_fraction <= 0:
        raise EvalSetError(f"{run_dir}: the run held out no eval data (data.eval_fraction = 0 and no "
                           "data.eval_file); give an eval set with --data FILE")
    if (leak := split_refusal(config.data)) is not None:
        raise EvalSetError(f"{run_dir.name}: {leak}")
    data = training_data(config.data)
    _, indices = held_out_split(len(data.examples), config.data.eval_fraction, config.training.seed)
    examples = [data.examples[i] for i in indices]
    lines = [data.lines[i] for i in indices] if len(data.lines) else None
    cases = cases_from_examples(examples, lines, turns=turns)
    return EvalSet(HELD_OUT, f"{label} ({len(indices)} of {len(data.examples)} rows of {data.path})",
                   _require_cases(cases, label))


__all__ = ["EvalCase", "EvalSet", "EvalSetError", "DataError", "TURNS", "HELD_OUT", "cases_from_examples",
           "load_eval_set", "held_out_set"]
