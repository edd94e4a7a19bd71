"""The long task: evaluate a base and its adapters on an eval set, as a headless function.

    outcome = run_eval(job, progress=state.progress, on_result=state.partial, should_stop=state.cancelled)

`progress(done, total, message)` after every batch, `on_result(record)` for every scored reply (a line of
results.jsonl, the per-example table's row), `on_start(columns, kept)` once the columns are known (with the
results a resumed eval keeps, which `on_result` does not repeat), and `should_stop()` polled between batches
and during generation: a cancelled eval returns with status "cancelled" and the results so far on disk, and
the same job run again resumes there (pass fresh=True to start over).

The base is loaded once (chat.ChatModel: as the first adapter's run trained it, QLoRA on its 4-bit base)
and every adapter is a column on those weights; the base column disables the adapters. Cases are batched
by prompt length within each column, so a batch carries little padding.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.eval.cases import EvalCase, EvalSet
from studio.core.eval.results import (
    RESULTS_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    ResultsWriter,
    read_results,
    rewrite_results,
    summarise,
    write_json,
)
from studio.core.metrics.registry import DEFAULT_METRICS, Metric, build_metrics
from studio.core.runs.history import EVALS_FOLDER

BASE_COLUMN = "base"
GGUF_COLUMN = "gguf"
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class EvalJob:
    """What to evaluate, on what, scored how, and where the results go."""

    model: str | Path
    """A run directory or adapter folder (its adapter is a column; the base it trained on is loaded), or a base
    model (folder or Hub id), which is then the only column."""
    eval_set: EvalSet
    metrics: Sequence[str] = DEFAULT_METRICS
    pattern: str | None = None
    """The regex metric's pattern (given alone, it adds that metric)."""
    adapters: Sequence[str | Path] = ()
    """More runs or adapters trained on the same base: more columns, on the same loaded weights."""
    include_base: bool = False
    """A column for the base model alone (adapters disabled)."""
    name: str | None = None
    """The eval's folder name under <run>/evals (default: the eval set's name)."""
    output_dir: Path | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    batch_size: int | None = None
    """None: chosen to fit memory (a small fixed one on a CPU)."""
    weights: str = "trained"
    """chat.BaseWeights: the weights the adapters trained on (default) or the original 16-bit ones."""
    trust_remote_code: bool | None = None
    """None: what the run allowed."""
    allow_pickle: bool | None = None
    """Pickle weights (core.models.weights); None: what the run allowed."""
    gguf: Path | None = None
    """An exported GGUF file as one more column (studio.core.eval.gguf), answered after the others with the
    studio's model unloaded; its summary says how many replies equal the first adapter's."""
    fresh: bool = False
    """Drop earlier results in the folder instead of resuming."""
    with_loss: bool = True

    def build_metrics(self) -> list[Metric]:
        """The scoring functions; MetricError (a ValueError naming it) for an unknown metric or a bad regex."""
        return build_metrics(list(self.metrics), pattern=self.pattern)

    def folder(self) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return eval_home(Path(str(self.model))) / EVALS_FOLDER / (self.name or self.eval_set.name)


def eval_home(model: Path) -> Path:
    """Where a model's evals folder lives: its run directory, an adapter folder of its own, else the studio's
    user data folder (a base model from the Hub has no folder of ours)."""
    if (model / "run.toml").is_file():
        return model
    if (model / "adapter_config.json").is_file():
        return model.parent if (model.parent / "run.toml").is_file() else model
    from studio.core.system.paths import user_data_dir

    return user_data_dir()


@dataclass
class EvalOutcome:
    status: str
    """"completed" or "cancelled"."""
    folder: Path
    summary: dict[str, Any]
    resumed: int = 0
    """Results kept from an earlier, interrupted run of the same eval."""
    generated: int = 0
    columns: list[str] = field(default_factory=list)

    @property
    def results_path(self) -> Path:
        return self.folder / RESULTS_FILE

    @property
    def summary_path(self) -> Path:
        return self.folder / SUMMARY_FILE


def adapter_fingerprint(folder: Path | None, base: str, loaded_as: str) -> str:
    """Changes when the weights answering change: another base load, or the adapter retrained in place."""
    parts = [base, loaded_as]
    if folder is not None:
        for weights in sorted(Path(folder).glob("adapter_model.*")):
            stat = weights.stat()
            parts.append(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def score_record(record: dict[str, Any], case_expected: str, metrics: Sequence[Metric]) -> None:
    """Fill in the record's missing metric scores from its reply (metrics are cheap; replies are not)."""
    scores = record.setdefault("scores", {})
    for metric in metrics:
        if metric.name not in scores:
            scores[metric.name] = metric(record["reply"], case_expected).to_dict()


def run_eval(job: EvalJob, *, progress: Callable[[int, int, str], None] | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, chat: Any = None,
             on_start: Callable[[list[str], list[dict[str, Any]]], None] | None = None) -> EvalOutcome:
    """Evaluate `job`; `chat` is an already loaded chat.ChatModel to use (kept loaded afterwards), else the
    model is loaded here and unloaded at the end."""
    from studio.core.chat.model import ChatModel
    from studio.core.eval.generate import (
        GenerationStopped,
        choose_batch_size,
        generate_batch,
        prompt_ids,
    )

    stop = should_stop or (lambda: False)
    report = progress or (lambda done, total, message: None)
    metrics = job.build_metrics()
    cases = list(job.eval_set.cases)
    folder = job.folder()
    folder.mkdir(parents=True, exist_ok=True)
    own = chat is None
    if own:
        report(0, 0, f"loading {job.model}")
        chat = ChatModel.load(job.model, adapters=list(job.adapters), weights=job.weights,
                              trust_remote_code=job.trust_remote_code, allow_pickle=job.allow_pickle)
    writer = None
    gguf_chat = None
    try:
        base_column = BASE_COLUMN if BASE_COLUMN not in chat.adapters else "(base)"
        columns: list[tuple[str, str | None]] = []
        if job.include_base or not chat.adapters:
            columns.append((base_column, None))
        columns += [(name, name) for name in chat.adapters]
        fingerprints = {column: adapter_fingerprint(chat.adapter_paths.get(adapter) if adapter else None,
                                                    chat.base_name, chat.loaded_as) for column, adapter in columns}
        sources = {column: (str(chat.adapter_paths[adapter]) if adapter else None) for column, adapter in columns}
        if job.gguf is not None:
            gguf_path = Path(job.gguf).resolve()
            columns.append((GGUF_COLUMN, None))
            fingerprints[GGUF_COLUMN] = adapter_fingerprint(None, *_file_identity(gguf_path))
            sources[GGUF_COLUMN] = str(gguf_path)
        write_json(folder / SETTINGS_FILE, {
            "name": folder.name, "eval_set": job.eval_set.source, "cases": len(cases),
            "metrics": [m.name for m in metrics], "pattern": job.pattern, "max_new_tokens": job.max_new_tokens,
            "base": chat.base_name, "loaded_as": chat.loaded_as,
            "models": {column: {"source": sources[column], "fingerprint": fingerprints[column]}
                       for column, _ in columns},
        })

        by_key = {case.key: case for case in cases}
        wanted = {(column, case.id, case.key) for column, _ in columns for case in cases}
        kept = [] if job.fresh else [
            r for r in read_results(folder / RESULTS_FILE)
            if (r.get("model"), r.get("case"), r.get("key")) in wanted
            and r.get("fingerprint") == fingerprints[r["model"]] and r.get("max_new_tokens") == job.max_new_tokens]
        for record in kept:
            score_record(record, by_key[record["key"]].expected, metrics)
        rewrite_results(folder / RESULTS_FILE, kept)
        records = list(kept)
        done_pairs = {(r["model"], r["case"]) for r in kept}
        total = len(columns) * len(cases)
        done, generated = len(kept), 0
        writer = ResultsWriter(folder / RESULTS_FILE)
        status = "completed"
        started = time.monotonic()
        report(done, total, f"resuming: {done} of {total} results kept" if done else f"0 of {total}")
        if on_start is not None:
            on_start([c for c, _ in columns], list(kept))

        for column, adapter in columns:
            todo = [case for case in cases if (column, case.id) not in done_pairs]
            if not todo:
                continue
            answering = chat
            if column == GGUF_COLUMN:
                from studio.core.eval.gguf import load_gguf_chat

                if own:  # one model in memory at a time: the studio's columns are done
                    chat.unload()
                    own = False
                report(done, total, f"loading {gguf_path}")
                answering = gguf_chat = load_gguf_chat(gguf_path)
            lengths = {case.id: len(prompt_ids(answering.tokenizer, case)) for case in todo}
            todo.sort(key=lambda case: lengths[case.id])  # stable: equal lengths keep the eval set's order
            batch_size = choose_batch_size(answering, max(lengths.values()) + job.max_new_tokens, job.batch_size)
            position = 0
            while position < len(todo):
                if stop():
                    status = "cancelled"
                    break
                batch = todo[position:position + batch_size]
                try:
                    replies = generate_batch(answering, adapter, batch, max_new_tokens=job.max_new_tokens,
                                             should_stop=stop, with_loss=job.with_loss)
                except GenerationStopped:
                    status = "cancelled"
                    break
                except Exception as error:
                    if batch_size > 1 and _out_of_memory(error):
                        import torch

                        torch.cuda.empty_cache()
                        batch_size = max(1, batch_size // 2)  # the next try of the same cases, half as wide
                        continue
                    raise
                for case, reply in zip(batch, replies):
                    record = _record(column, case, reply, job.max_new_tokens, fingerprints[column])
                    score_record(record, case.expected, metrics)
                    writer.write(record)
                    records.append(record)
                    if on_result is not None:
                        on_result(record)
                position += len(batch)
                done += len(batch)
                generated += len(batch)
                report(done, total, _progress_text(column, done, total, generated, time.monotonic() - started))
            if status == "cancelled":
                break
        names = [m.name for m in metrics]
        summary = {
            "name": folder.name, "eval_set": job.eval_set.source, "cases": len(cases), "complete": done == total,
            "max_new_tokens": job.max_new_tokens, "metric_names": names,
            "models": summarise(records, [c for c, _ in columns], names),
        }
        for column, _ in columns:
            summary["models"][column]["source"] = sources[column]
        if job.gguf is not None:
            summary["models"][GGUF_COLUMN]["read_by"] = "transformers' GGUF loader, not llama.cpp"
            reference = next((c for c, a in columns if a is not None), None)
            if reference is not None:
                summary["models"][GGUF_COLUMN]["identical_to"] = identical_replies(records, GGUF_COLUMN, reference)
        write_json(folder / SUMMARY_FILE, summary)
        return EvalOutcome(status, folder, summary, resumed=len(kept), generated=generated,
                           columns=[c for c, _ in columns])
    finally:
        if writer is not None:
            writer.close()
        if gguf_chat is not None:
            gguf_chat.unload()
        if own:
            chat.unload()


def identical_replies(records: Sequence[dict[str, Any]], column: str, reference: str) -> dict[str, Any]:
    """How many of `column`'s replies equal `reference`'s on the same case (an export against the studio's)."""
    theirs = {r["case"]: r["reply"] for r in records if r["model"] == reference}
    pairs = [(r["case"], r["reply"] == theirs[r["case"]]) for r in records
             if r["model"] == column and r["case"] in theirs]
    return {"column": reference, "identical": sum(same for _, same in pairs), "total": len(pairs),
            "differing_cases": [case for case, same in pairs if not same]}


def _file_identity(path: Path) -> tuple[str, str]:
    stat = path.stat()
    return str(path), f"{stat.st_size}:{stat.st_mtime_ns}"


def _record(column: str, case: EvalCase, reply: Any, max_new_tokens: int, fingerprint: str) -> dict[str, Any]:
    return {"model": column, "case": case.id, "key": case.key, "line": case.line, "prompt": case.messages(),
            "expected": case.expected, "reply": reply.reply, "new_tokens": reply.new_tokens,
            "truncated": reply.truncated, "loss": reply.loss, "loss_tokens": reply.loss_tokens,
            "max_new_tokens": max_new_tokens, "fingerprint": fingerprint, "scores": {}}


def _progress_text(column: str, done: int, total: int, generated: int, seconds: float) -> str:
    from studio.core.system.units import format_duration

    rate = generated / seconds if seconds > 0 else 0.0
    left = f", about {format_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
    return f"{column}: {done}/{total} ({rate:.2f} examples/s{left})"


def _out_of_memory(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()
