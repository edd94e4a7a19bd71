"""`<eval dir>/results.jsonl` (one scored reply per line, appended as each is scored) and `summary.json`.

A line is kept on resume only for a case, model and generation setting still asked for (its case key,
model fingerprint and max_new_tokens match); a half-written last line (a killed process) is ignored. The
file is rewritten once, atomically, with the kept lines before new ones are appended, so the final file
has each (model, case) once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from studio.core.metrics.tool_calls import cases_expecting_a_call
from studio.core.runs.history import EVAL_SUMMARY_FILE as SUMMARY_FILE  # noqa: F401 - the Runs view reads the scores from it

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "eval.json"


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete record in a results file (a broken or partial line is skipped), the last one per
    (model, case) winning."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "model" in record and "case" in record:
            records[(str(record["model"]), str(record["case"]))] = record
    return list(records.values())


def rewrite_results(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace the file with `records` (a temporary file renamed over it: never half old, half new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            for record in records:
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # the results file as it was: a resume still finds every result
        raise


class ResultsWriter:
    """Appends one record per line, flushed at once: what is on disk is what a resume finds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stream = self.path.open("a", encoding="utf-8")
        self._failed = False

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._stream.flush()
        except OSError:
            self._failed = True
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            # After a failed write (a full disk) closing flushes the same unwritable line again: the write's
            # error is the one to report, and the torn line is skipped by every reader.
            if not self._failed:
                raise


def summarise(records: Sequence[dict[str, Any]], models: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """Per model: per metric passed/total and mean score (and the tool-call checks' counts), truncated replies,
    prompts cut to fit the model's context (their first tokens dropped), and the eval loss (token-weighted mean)
    and perplexity over the cases with a loss."""
    out: dict[str, Any] = {}
    for model in models:
        rows = [r for r in records if r.get("model") == model]
        per_metric: dict[str, Any] = {}
        for metric in metrics:
            scored = [r["scores"][metric] for r in rows if metric in r.get("scores", {})]
            entry: dict[str, Any] = {
                "passed": sum(1 for s in scored if s["passed"]), "total": len(scored),
                "mean_score": round(sum(s["score"] for s in scored) / len(scored), 4) if scored else None,
            }
            parts: dict[str, list[int]] = {}
            for s in scored:
                for part, ok in (s.get("detail") or {}).get("parts", {}).items():
                    counts = parts.setdefault(part, [0, 0])
                    counts[0] += bool(ok)
                    counts[1] += 1
            if parts:
                entry["parts"] = {part: {"passed": a, "total": n} for part, (a, n) in parts.items()}
                if (expecting := cases_expecting_a_call(entry["parts"])) is not None:
                    entry["cases_expecting_a_call"] = expecting
            per_metric[metric] = entry
        nll = sum(r["loss"] * r["loss_tokens"] for r in rows if r.get("loss") is not None)
        tokens = sum(r["loss_tokens"] for r in rows if r.get("loss") is not None)
        eval_loss = nll / tokens if tokens else None
        out[model] = {
            "done": len(rows),
            "truncated": sum(1 for r in rows if r.get("truncated")),
            "prompts_cut": sum(1 for r in rows if r.get("prompt_cut")),
            "eval_loss": round(eval_loss, 6) if eval_loss is not None else None,
            "perplexity": round(math.exp(min(eval_loss, 700.0)), 4) if eval_loss is not None else None,
            "metrics": per_metric,
        }
    return out


def write_json(path: Path, document: dict[str, Any]) -> None:
    temporary = Path(path).with_name(Path(path).name + ".tmp")
    try:
        temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # a full disk leaves the old file whole and no half-written copy
        raise
