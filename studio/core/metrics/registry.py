"""The metrics by name, as the CLI's --metric and the Evaluate tab offer them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from studio.core.metrics.result import MetricResult
from studio.core.metrics.text import (
    chrf,
    compile_pattern,
    contains,
    exact_match,
    normalised_match,
    regex_match,
)
from studio.core.metrics.tool_calls import tool_call_match


class MetricError(ValueError):
    """A metric the user asked for that does not exist or cannot be built (a regex that does not compile)."""


@dataclass(frozen=True)
class MetricInfo:
    name: str
    title: str
    description: str
    needs_pattern: bool = False


METRICS: dict[str, MetricInfo] = {info.name: info for info in (
    MetricInfo("exact", "Exact", "the reply equals the expected one (surrounding whitespace aside)"),
    MetricInfo("normalised", "Normalised", "equal ignoring case, punctuation and spacing (Unicode-aware; "
                                           "İ, I, i and ı count as one letter)"),
    MetricInfo("normalised_tr", "Normalised (Turkish casing)", "as normalised, with Turkish casing: İ↔i, I↔ı"),
    MetricInfo("contains", "Contains", "the expected text appears in the reply"),
    MetricInfo("regex", "Regex", "the pattern (--pattern) is found in the reply", needs_pattern=True),
    MetricInfo("tool_call", "Tool call", "the same function calls with every argument JSON-equal"),
    MetricInfo("chrf", "chrF", "character n-gram similarity (sacrebleu), passed from 0.70"),
)}
DEFAULT_METRICS = ("exact", "normalised", "tool_call", "chrf")


@dataclass(frozen=True)
class Metric:
    """A metric ready to score: `metric(reply, expected)` → MetricResult."""

    name: str
    score: Callable[[str, Any], MetricResult]

    def __call__(self, reply: str, expected: Any) -> MetricResult:
        return self.score(reply, expected)


def build_metric(name: str, *, pattern: str | None = None) -> Metric:
    """The metric `name`; MetricError names an unknown one, a missing pattern or one that does not compile."""
    key = name.strip().lower().replace("-", "_")
    key = {"normalized": "normalised", "tool_calls": "tool_call", "toolcall": "tool_call"}.get(key, key)
    if key not in METRICS:
        raise MetricError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    if key == "regex":
        if not pattern:
            raise MetricError("the regex metric needs a pattern (--pattern)")
        try:
            compile_pattern(pattern)
        except ValueError as error:
            raise MetricError(str(error)) from None
        return Metric(key, partial(regex_match, pattern=pattern))
    functions: dict[str, Callable[..., MetricResult]] = {
        "exact": exact_match, "normalised": normalised_match, "normalised_tr": partial(normalised_match, turkish=True),
        "contains": contains, "tool_call": tool_call_match, "chrf": chrf,
    }
    return Metric(key, functions[key])


def build_metrics(names: Sequence[str], *, pattern: str | None = None) -> list[Metric]:
    """Each named metric once, in the order given ("exact,tool_call" style lists are split); a pattern alone
    implies the regex metric."""
    wanted: list[str] = []
    for entry in names:
        for name in str(entry).split(","):
            if name.strip() and name.strip() not in wanted:
                wanted.append(name.strip())
    metrics = [build_metric(name, pattern=pattern) for name in wanted]
    if pattern and not any(m.name == "regex" for m in metrics):
        metrics.append(build_metric("regex", pattern=pattern))
    unique: dict[str, Metric] = {}
    for metric in metrics:
        unique.setdefault(metric.name, metric)
    if not unique:
        raise MetricError("no metric given")
    return list(unique.values())
