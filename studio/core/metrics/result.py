"""What every metric returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """One reply scored by one metric: a verdict, a score in [0, 1] and what a table shows about it.

    `detail` holds only JSON values (it is written to results.jsonl as it is); its `reason` key, when
    present, is one line saying why the reply failed."""

    passed: bool
    score: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(self.detail.get("reason", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "score": round(float(self.score), 6), "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricResult:
        return cls(passed=bool(data["passed"]), score=float(data["score"]), detail=dict(data.get("detail") or {}))


def verdict(passed: bool, detail: dict[str, Any] | None = None) -> MetricResult:
    """A pass/fail metric's result: score 1 or 0."""
    return MetricResult(passed, 1.0 if passed else 0.0, detail or {})
