"""The long task: evaluate a base and its adapters on an eval set, as a headless function.

    outcome = run_eval(job, task=state, on_result=record_shown)

`task.progress(done, total, message)` after every batch, `on_result(record)` for every scored reply (a line of
results.jsonl, the per-example table's row), `on_start(columns, kept)` once the columns are known (with the
results a resumed eval keeps, which `on_result` does not repeat), and `task.cancelled()` polled between batches
and during generation: a cancelled eval returns with status "cancelled" and the results so far on disk, and
the same job run again resumes there (pass fresh=True to start over).

The base is loaded once (chat.ChatModel: as the first adapter's run trained it, QLoRA on its 4-bit base)
and every adapter is a column on those weights; the base column disables the adapters. Cases are batched
by prompt length within each column, so a batch carries little padding.

An eval folder has one writer and one set of settings. The process writing it holds `eval.lock` there (the run
lock's mechanism, core.system.folder_lock): a second eval of the same folder at once is refused. Its `eval.json`
states what its replies answer (the cases by content, max new tokens, the base as loaded, each column's weights
by content): an eval with other settings goes to a new folder (NAME-2, NAME-3, ...: the first free one or the
one holding the same settings, so the same command resumes there) and never mixes into or replaces another's
results. Metrics are not settings: a metric added to an eval scores its stored replies.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
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
from studio.core.system.folder_lock import FolderLock, is_locked, lock_holder
from studio.core.system.tasks import NO_TASK, TaskState

BASE_COLUMN = "base"
GGUF_COLUMN = "gguf"
DEFAULT_MAX_NEW_TOKENS = 256
LOCK_FILE = "eval.lock"
IDENTITY_KEYS = ("cases_digest", "max_new_tokens", "base", "loaded_as", "models")
"""What an eval's replies depend on (eval.json): another value of any of them is another eval."""


class EvalError(ValueError):
    """An eval that cannot go ahead, or on, said in one line: a bad name, a folder another process writes, a run
    still training, a full disk."""


def check_eval_name(name: str) -> str:
    """`name` if it is a plain folder name for <run>/evals/NAME, else EvalError: no path separators, no `..`, not
    absolute, not empty, no leading dot (a hidden folder the Runs view would not list)."""
    text = str(name)
    if (not text.strip() or "/" in text or "\\" in text or text in (".", "..") or text.startswith(".")
            or os.path.isabs(text) or re.match(r"^[A-Za-z]:", text) or "\0" in text):
        raise EvalError(f"eval name {text!r}: give a plain folder name (no '/', '\\', '..' or leading dot); "
                        "the eval is written to <run>/evals/NAME")
    return text


def default_eval_name(eval_set_name: str) -> str:
    """An eval set's name as a folder name: a hidden file's leading dots dropped."""
    return str(eval_set_name).lstrip(".").replace("/", "_").replace("\\", "_") or "eval"


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
    """Generate every reply again in the eval's folder (one with the same settings) instead of resuming."""
    with_loss: bool = True
    replace_other_settings: bool = False
    """Take `folder()` even when it holds another eval's results, dropping them: only for a folder that is the
    studio's own scratch (the export check's), never for a user's eval."""

    def build_metrics(self) -> list[Metric]:
        """The scoring functions; MetricError (a ValueError naming it) for an unknown metric or a bad regex."""
        return build_metrics(list(self.metrics), pattern=self.pattern)

    def folder(self) -> Path:
        """The folder asked for; the eval is written there, or beside it (NAME-2) when it holds other settings."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        name = check_eval_name(self.name) if self.name is not None else default_eval_name(self.eval_set.name)
        return eval_home(Path(str(self.model))) / EVALS_FOLDER / name

    def check(self) -> None:
        """EvalError for settings no eval can run with, before anything is loaded or written."""
        check_request(self.model, self.adapters, name=self.name, max_new_tokens=self.max_new_tokens)
        if (busy := _busy(self.folder())) is not None:  # known before a model is loaded (claim checks again)
            raise EvalError(busy)


def check_request(model: str | Path, adapters: Sequence[str | Path] = (), *, name: str | None = None,
                  max_new_tokens: Any = DEFAULT_MAX_NEW_TOKENS) -> None:
    """EvalError for what no eval may do, known before the eval set is read or a model loaded: a name that is not a
    plain folder name, max new tokens below 1, a run (of the model or an adapter) still training."""
    if name is not None:
        check_eval_name(name)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise EvalError(f"max new tokens {max_new_tokens}: give at least 1 (the longest reply, in tokens)")
    from studio.core.runs.store import training_refusal

    for path in [model, *adapters]:
        if (refusal := training_refusal(Path(str(path)))) is not None:
            raise EvalError(refusal)


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


def adapter_fingerprint(folder: Path | None, base: str, loaded_as: str, files: Sequence[Path] = ()) -> str:
    """Changes when the weights answering change: another base load, the adapter retrained in place, another
    GGUF file's content. By content (sha256): a file altered in place keeps its size, and `touch -r` its mtime."""
    parts = [base, loaded_as]
    weights = sorted(Path(folder).glob("adapter_model.*")) if folder is not None else []
    for path in [*weights, *map(Path, files)]:
        parts.append(f"{path.name}:{file_sha256(path)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The file's sha256, read in 1 MiB pieces (a GGUF of several GB is never held in memory): a few seconds
    per GB, against minutes of generation for the replies it decides to keep."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cases_digest(cases: Sequence[EvalCase]) -> str:
    """The eval set by content: every case's id, prompt and expected reply (data, mapping and last-turn alike)."""
    return hashlib.sha256("|".join(f"{case.id}:{case.key}" for case in cases).encode()).hexdigest()[:16]


class EvalFolder:
    """The folder an eval writes, held for one writer (`eval.lock`) from `claim` until `release`.

    `claim` takes the folder asked for when it is new, holds nothing, or holds an eval with the same settings;
    else the first NAME-2, NAME-3... that does. A folder another process holds is refused (EvalError), whatever
    its settings: two writers of one results file interleave their replies. A folder this claim created is
    removed again on `release(keep=False)`, so a refusal or an early failure leaves no empty eval folder."""

    def __init__(self, path: Path, lock: FolderLock, created: bool, asked: Path, stored: dict[str, Any] | None):
        self.path, self.lock, self.created, self.asked, self.stored = path, lock, created, asked, stored

    @property
    def moved(self) -> bool:
        """Written beside the folder asked for, which holds an eval with other settings."""
        return self.path != self.asked

    @classmethod
    def claim(cls, asked: Path, identity: dict[str, Any], *, replace: bool = False) -> EvalFolder:
        asked = Path(asked)
        number = 1
        while True:
            path = asked if number == 1 else asked.with_name(f"{asked.name}-{number}")
            created = False
            if not path.exists():
                try:
                    path.mkdir(parents=True)
                    created = True
                except FileExistsError:  # another eval made it this instant: look again
                    continue
            if (busy_message := _busy(path)) is not None:
                raise EvalError(busy_message)
            stored = _read_settings(path)
            # Another eval's folder is passed by without taking its lock (which would write our pid into it).
            if not (replace or created or _holds_nothing(path) or (stored is not None and _same(stored, identity))):
                number += 1
                continue
            lock = FolderLock(path / LOCK_FILE)
            if not lock.acquire():  # taken between the look and now
                if created:
                    _remove_own(path)
                raise EvalError(_busy(path) or f"eval {path.name} is being written by another process")
            return cls(path, lock, created, asked, _read_settings(path))

    def release(self, *, keep: bool = True) -> None:
        self.lock.release()
        if not keep and self.created:
            _remove_own(self.path)

    def differences(self, identity: dict[str, Any]) -> str:
        """What differs between the folder asked for and this eval, in words (for the note of a move)."""
        stored = _read_settings(self.asked)
        if stored is None:
            return "it holds other files"
        words = {"cases_digest": "other cases", "base": "another base", "loaded_as": "the base loaded otherwise",
                 "models": "other models or weights"}
        out = []
        for key in IDENTITY_KEYS:
            if stored.get(key) != identity.get(key):
                out.append(f"max new tokens {stored.get(key)} there, {identity.get(key)} here"
                           if key == "max_new_tokens" else words[key])
        return ", ".join(out) or "other settings"


def _busy(path: Path) -> str | None:
    lock_path = path / LOCK_FILE
    if not is_locked(lock_path):
        return None
    pid = lock_holder(lock_path)
    return (f"eval {path.name} is being written by another process ({f'pid {pid}' if pid else 'pid unknown'}): "
            "wait for it to end, or give another --name")


def _read_settings(path: Path) -> dict[str, Any] | None:
    import json

    try:
        stored = json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _same(stored: dict[str, Any], identity: dict[str, Any]) -> bool:
    return all(stored.get(key) == identity.get(key) for key in IDENTITY_KEYS)


def _holds_nothing(path: Path) -> bool:
    """Nothing but a lock file (an eval that stopped before writing its settings)."""
    return all(entry.name in (LOCK_FILE, SETTINGS_FILE + ".tmp") for entry in path.iterdir())


def _remove_own(path: Path) -> None:
    """Remove a folder this eval created, with the only files it may hold before any result (never more)."""
    for name in (LOCK_FILE, SETTINGS_FILE, SETTINGS_FILE + ".tmp", RESULTS_FILE, RESULTS_FILE + ".tmp"):
        (path / name).unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:
        pass


class _Writing:
    """Names the file being written, so that a full disk is reported as "while writing FILE"."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def __call__(self, path: Path) -> Path:
        self.path = Path(path)
        return self.path


def _disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def score_record(record: dict[str, Any], case_expected: str, metrics: Sequence[Metric]) -> None:
    """Fill in the record's missing metric scores from its reply (metrics are cheap; replies are not)."""
    scores = record.setdefault("scores", {})
    for metric in metrics:
        if metric.name not in scores:
            scores[metric.name] = metric(record["reply"], case_expected).to_dict()


def run_eval(job: EvalJob, *, task: TaskState = NO_TASK,
             on_result: Callable[[dict[str, Any]], None] | None = None, chat: Any = None,
             on_start: Callable[[list[str], list[dict[str, Any]]], None] | None = None) -> EvalOutcome:
    """Evaluate `job`; `chat` is an already loaded chat.ChatModel to use (kept loaded afterwards), else the
    model is loaded here and unloaded at the end. EvalError (one line) for an eval that cannot go ahead: a bad
    name or max new tokens, a run still training, a folder another eval writes, a full disk (the results so far
    kept, for the same command to resume)."""
    from studio.core.chat.model import ChatModel

    job.check()
    metrics = job.build_metrics()
    gguf_path = Path(job.gguf).resolve() if job.gguf is not None else None
    if gguf_path is not None:
        from studio.core.eval.gguf import check_gguf_file

        check_gguf_file(gguf_path)
    own = chat is None
    if own:
        task.progress(0, 0, f"loading {job.model}")
        chat = ChatModel.load(job.model, adapters=list(job.adapters), weights=job.weights,
                              trust_remote_code=job.trust_remote_code, allow_pickle=job.allow_pickle)
    claimed: EvalFolder | None = None
    writing = _Writing()
    finished = False
    try:
        base_column = BASE_COLUMN if BASE_COLUMN not in chat.adapters else "(base)"
        columns: list[tuple[str, str | None]] = []
        if job.include_base or not chat.adapters:
            columns.append((base_column, None))
        columns += [(name, name) for name in chat.adapters]
        fingerprints = {column: adapter_fingerprint(chat.adapter_paths.get(adapter) if adapter else None,
                                                    chat.base_name, chat.loaded_as) for column, adapter in columns}
        sources = {column: (str(chat.adapter_paths[adapter]) if adapter else None) for column, adapter in columns}
        if gguf_path is not None:
            task.progress(0, 0, f"fingerprinting {gguf_path}")
            columns.append((GGUF_COLUMN, None))
            fingerprints[GGUF_COLUMN] = adapter_fingerprint(None, str(gguf_path), "GGUF", files=[gguf_path])
            sources[GGUF_COLUMN] = str(gguf_path)
        cases = list(job.eval_set.cases)
        identity = {"cases_digest": cases_digest(cases), "max_new_tokens": job.max_new_tokens,
                    "base": chat.base_name, "loaded_as": chat.loaded_as,
                    "models": {column: {"source": sources[column], "fingerprint": fingerprints[column]}
                               for column, _ in columns}}
        claimed = EvalFolder.claim(job.folder(), identity, replace=job.replace_other_settings)
        outcome = _evaluate(job, chat, claimed, identity, columns, fingerprints, sources, metrics, cases, gguf_path,
                            task, on_result, on_start, writing,
                            unload_studio=own)
        own = own and not outcome.studio_unloaded
        finished = True
        return outcome.result
    except OSError as error:
        if not _disk_full(error) or claimed is None:
            raise
        kept = len(read_results(claimed.path / RESULTS_FILE))
        where = writing.path or claimed.path
        raise EvalError(f"no space left on {claimed.path} while writing {where.name}; {kept} result"
                        f"{'' if kept == 1 else 's'} kept, run the same command again to resume") from None
    finally:
        if claimed is not None:  # a folder this eval made and wrote no result into is not left behind
            results = claimed.path / RESULTS_FILE
            claimed.release(keep=finished or (results.is_file() and results.stat().st_size > 0))
        if own:
            chat.unload()


@dataclass
class _Evaluated:
    result: EvalOutcome
    studio_unloaded: bool


def _evaluate(job: EvalJob, chat: Any, claimed: EvalFolder, identity: dict[str, Any],
              columns: list[tuple[str, str | None]], fingerprints: dict[str, str], sources: dict[str, str | None],
              metrics: list[Metric], cases: list[EvalCase], gguf_path: Path | None,
              task: TaskState, on_result: Callable[[dict[str, Any]], None] | None,
              on_start: Callable[[list[str], list[dict[str, Any]]], None] | None,
              writing: _Writing, *, unload_studio: bool) -> _Evaluated:
    """The eval in its claimed folder: settings written, stored replies kept and (re)scored, the rest generated."""
    from studio.core.eval.generate import (
        GenerationStopped,
        choose_batch_size,
        context_length,
        fit_to_context,
        generate_batch,
        prompt_ids,
    )

    folder = claimed.path
    if claimed.moved:
        task.progress(0, 0, f"{claimed.asked} holds an eval with other settings ({claimed.differences(identity)}): "
                     f"writing {folder}")
    stored_pattern = (claimed.stored or {}).get("pattern")
    write_json(writing(folder / SETTINGS_FILE), {
        "name": folder.name, "eval_set": job.eval_set.source, "cases": len(cases),
        "metrics": [m.name for m in metrics], "pattern": job.pattern, **identity,
    })

    by_key = {case.key: case for case in cases}
    wanted = {(column, case.id, case.key) for column, _ in columns for case in cases}
    kept = [] if job.fresh else [
        r for r in read_results(folder / RESULTS_FILE)
        if (r.get("model"), r.get("case"), r.get("key")) in wanted
        and r.get("fingerprint") == fingerprints[r["model"]] and r.get("max_new_tokens") == job.max_new_tokens]
    for record in kept:
        if stored_pattern != job.pattern:  # the regex metric asks another question now: score it again
            record.get("scores", {}).pop("regex", None)
        score_record(record, by_key[record["key"]].expected, metrics)
    rewrite_results(writing(folder / RESULTS_FILE), kept)
    records = list(kept)
    done_pairs = {(r["model"], r["case"]) for r in kept}
    total = len(columns) * len(cases)
    done, generated = len(kept), 0
    writer = None
    gguf_chat = None
    studio_unloaded = False
    context: int | None = None
    status = "completed"
    try:
        writing(folder / RESULTS_FILE)
        writer = ResultsWriter(folder / RESULTS_FILE)
        started = time.monotonic()
        task.progress(done, total, f"resuming: {done} of {total} results kept" if done else f"0 of {total}")
        if on_start is not None:
            on_start([c for c, _ in columns], list(kept))

        for column, adapter in columns:
            todo = [case for case in cases if (column, case.id) not in done_pairs]
            if not todo:
                continue
            answering = chat
            if column == GGUF_COLUMN:
                from studio.core.eval.gguf import load_gguf_chat

                if unload_studio and not studio_unloaded:  # one model in memory at a time: the studio's are done
                    chat.unload()
                    studio_unloaded = True
                task.progress(done, total, f"loading {gguf_path}")
                answering = gguf_chat = load_gguf_chat(gguf_path)
            context = context_length(answering)
            lengths = {case.id: len(prompt_ids(answering.tokenizer, case)) for case in todo}
            fits = {case.id: fit_to_context(lengths[case.id], job.max_new_tokens, context) for case in todo}
            todo.sort(key=lambda case: lengths[case.id])  # stable: equal lengths keep the eval set's order
            longest = max(fit.keep + fit.reply_limit for fit in fits.values())
            batch_size = choose_batch_size(answering, longest, job.batch_size)
            position = 0
            while position < len(todo):
                if task.cancelled():
                    status = "cancelled"
                    break
                # One reply limit per batch: a row generating past its own limit could run past the context.
                limit = fits[todo[position].id].reply_limit
                batch = []
                for case in todo[position:position + batch_size]:
                    if fits[case.id].reply_limit != limit:
                        break
                    batch.append(case)
                try:
                    replies = generate_batch(answering, adapter, batch, max_new_tokens=job.max_new_tokens,
                                             task=task, with_loss=job.with_loss)
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
                task.progress(done, total,
                              _progress_text(column, done, total, generated, time.monotonic() - started))
            if status == "cancelled":
                break
    finally:
        if writer is not None:
            writer.close()
        if gguf_chat is not None:
            gguf_chat.unload()
    names = [m.name for m in metrics]
    summary = {
        "name": folder.name, "eval_set": job.eval_set.source, "cases": len(cases), "complete": done == total,
        "max_new_tokens": job.max_new_tokens, "metric_names": names,
        "models": summarise(records, [c for c, _ in columns], names),
    }
    if claimed.moved:
        summary["written_beside"] = {"folder": str(claimed.asked), "because": claimed.differences(identity)}
    if context is not None and job.max_new_tokens >= context:
        summary["max_new_tokens_capped"] = {"context": context, "asked": job.max_new_tokens}
    for column, _ in columns:
        summary["models"][column]["source"] = sources[column]
    if gguf_path is not None:
        summary["models"][GGUF_COLUMN]["read_by"] = "transformers' GGUF loader, not llama.cpp"
        reference = next((c for c, a in columns if a is not None), None)
        if reference is not None:
            summary["models"][GGUF_COLUMN]["identical_to"] = identical_replies(records, GGUF_COLUMN, reference)
    write_json(writing(folder / SUMMARY_FILE), summary)
    return _Evaluated(EvalOutcome(status, folder, summary, resumed=len(kept), generated=generated,
                                  columns=[c for c, _ in columns]),
                      studio_unloaded)


def identical_replies(records: Sequence[dict[str, Any]], column: str, reference: str) -> dict[str, Any]:
    """How many of `column`'s replies equal `reference`'s on the same case (an export against the studio's)."""
    theirs = {r["case"]: r["reply"] for r in records if r["model"] == reference}
    pairs = [(r["case"], r["reply"] == theirs[r["case"]]) for r in records
             if r["model"] == column and r["case"] in theirs]
    return {"column": reference, "identical": sum(same for _, same in pairs), "total": len(pairs),
            "differing_cases": [case for case, same in pairs if not same]}


def _record(column: str, case: EvalCase, reply: Any, max_new_tokens: int, fingerprint: str) -> dict[str, Any]:
    return {"model": column, "case": case.id, "key": case.key, "line": case.line, "prompt": case.messages(),
            "expected": case.expected, "reply": reply.reply, "new_tokens": reply.new_tokens,
            "truncated": reply.truncated, "loss": reply.loss, "loss_tokens": reply.loss_tokens,
            "max_new_tokens": max_new_tokens, "reply_limit": reply.reply_limit, "prompt_cut": reply.prompt_cut,
            "fingerprint": fingerprint, "scores": {}}


def _progress_text(column: str, done: int, total: int, generated: int, seconds: float) -> str:
    from studio.core.system.units import format_duration

    rate = generated / seconds if seconds > 0 else 0.0
    left = f", about {format_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
    return f"{column}: {done}/{total} ({rate:.2f} examples/s{left})"


def _out_of_memory(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()
