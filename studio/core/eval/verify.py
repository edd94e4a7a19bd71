"""Export fidelity as a check, not a promise: does an exported model answer like the studio?

The studio's replies are the trained adapter on the base as it trained (chat.ChatModel.load of the run, QLoRA
on its 4-bit base); the export's are a merged model folder's (transformers) or a GGUF file's, answered by
llama.cpp through llama-cpp-python when it is installed, else read back with transformers' GGUF loader (the
file's weights, tokenizer and template, not llama.cpp's kernels). Both answer the same cases greedily, so an
identical reply is the same model's reply; surrounding whitespace aside, since detokenizers differ there.

The cases are the run's held-out split when it has one, else its training examples (the last assistant turn
of each): the first `limit` of them. The studio's replies are an ordinary eval under
`<run>/evals/export-check/studio/` (resumed: a second export of the same run asks the studio nothing new);
the export's are answered afresh every time, beside them under the export's name, since a file re-exported to
the same path has new weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.eval.cases import (
    EvalCase,
    EvalSet,
    EvalSetError,
    cases_from_examples,
    held_out_set,
)
from studio.core.eval import llama_child
from studio.core.eval.results import RESULTS_FILE, read_results, rewrite_results
from studio.core.eval.runner import DEFAULT_MAX_NEW_TOKENS, EvalJob, eval_home, run_eval
from studio.core.runs.history import EVALS_FOLDER
from studio.core.system.paths import safe_name
from studio.core.system.processes import describe_exit
from studio.core.system.tasks import NO_TASK, TaskState, reporting

DEFAULT_CASES = 10
CHECK_FOLDER = "export-check"
"""Under the run's evals folder; one level deeper than an eval's summary.json, so the Runs view does not take a
check's studio replies for the run's latest scores."""
STUDIO_FOLDER = "studio"
LLAMA_CTX = 4096
"""llama.cpp's context for the check: room for a conversation and its reply, without the KV cache of a
model's full trained context (128k tokens for Llama 3.1)."""

ENGINES = ("auto", "llama.cpp", "transformers")
LLAMA_CPP = "llama.cpp (llama-cpp-python)"
TRANSFORMERS_GGUF = "transformers' GGUF loader, not llama.cpp"
TRANSFORMERS = "transformers"



class ExportCheckError(ValueError):
    """A check that cannot be made: no run or adapter to answer as the studio, no export there, no cases."""


class ExportCheckFailed(ExportCheckError):
    """A check that could not run to its end: llama.cpp crashed. It is no result, so no score is stated anywhere
    (a crash read as "0/10 identical" would blame the export for llama.cpp's failure)."""


TASK_METRIC = "tool call right"
"""The task metric a check states beside identical replies: metrics.tool_calls.tool_call_match (a case expecting no
call passes by making none)."""
RULE = ("Rounding or broken? A quantized file may word a reply differently and still be right. The export passes "
        "when its tool calls are right in as many cases as the trained model's, give or take 2% of the cases (at "
        "least one case); more than that is a broken export.")


def task_tolerance(total: int) -> int:
    """How many cases the export's task metric may trail the trained model's by: 2% of the cases, at least one."""
    return max(1, int(0.02 * total))


REPACKING_CRASHED = ("llama.cpp's default (CPU weight repacking) crashed on this CPU; checked with repacking off — "
                     "Ollama runs the same default")


@dataclass
class CaseCheck:
    """One case: the studio's reply and the export's."""

    case: str
    question: str
    studio: str
    export: str
    truncated: bool = False
    """The export's reply reached max_new_tokens."""
    error: str = ""
    """Why the export gave no reply (llama.cpp refused the prompt)."""
    expected: str = ""
    task_studio: bool = False
    task_export: bool = False
    """The task metric (TASK_METRIC) of the trained model's reply and the export's."""
    differs_at: int | None = None
    """The first token (counted from 1, in the trained model's tokenizer) where the replies part, and the two tokens."""
    studio_token: str = ""
    export_token: str = ""

    @property
    def identical(self) -> bool:
        return not self.error and self.studio.strip() == self.export.strip()

    def first_difference(self) -> str:
        """"case 12 differs from token 9: `get_bill` → `get_tariff`"."""
        if self.error:
            return f"case {self.case}: no reply ({self.error})"
        if self.differs_at is None:
            return f"case {self.case} differs"
        return (f"case {self.case} differs from token {self.differs_at}: `{self.studio_token}` → "
                f"`{self.export_token}`")


@dataclass
class ExportVerification:
    export: Path
    kind: str
    """"merged" or "gguf"."""
    engine: str
    """What answered for the export, in words."""
    status: str
    """"completed" or "cancelled"."""
    folder: Path
    cases_from: str = ""
    """Which cases, in words: "10 of the run's training examples"."""
    cases: list[CaseCheck] = field(default_factory=list)
    readme: Path | None = None
    """The model card the result was stated on (export.jobs.verify_export)."""
    note: str = ""
    """What the reader of the result must know about how it was made: llama.cpp's default crashed and the check
    ran with its CPU weight repacking off."""
    type_label: str = ""
    """The GGUF file's type as llama.cpp names it ("Q4_K_M"), from its general.file_type; "" for a merged model."""

    @property
    def task_studio(self) -> int:
        return sum(case.task_studio for case in self.cases)

    @property
    def task_export(self) -> int:
        return sum(case.task_export for case in self.cases)

    @property
    def passes(self) -> bool:
        """RULE: the export's task metric within 2% of the cases (at least one) of the trained model's."""
        return self.task_export >= self.task_studio - task_tolerance(self.total)

    def verdict(self) -> str:
        if self.passes:
            return "passes (differences within rounding)" if self.differing else "passes (identical)"
        return (f"broken export: {TASK_METRIC} in {self.task_export} cases against the trained model's "
                f"{self.task_studio}, more than {task_tolerance(self.total)} fewer")

    @property
    def identical(self) -> int:
        return sum(case.identical for case in self.cases)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def differing(self) -> list[CaseCheck]:
        return [case for case in self.cases if not case.identical]

    def headline(self) -> str:
        """'Q4_K_M: 45/47 replies identical to the studio's; tool call right 46/47 (trained model 47/47); case 12
        differs from token 9: `get_bill` → `get_tariff`; passes (differences within rounding)'."""
        text = (f"{self.type_label + ': ' if self.type_label else ''}{self.identical}/{self.total} replies identical "
                f"to the studio's; {TASK_METRIC} {self.task_export}/{self.total} (trained model "
                f"{self.task_studio}/{self.total})")
        if self.differing:
            text += "; " + "; ".join(case.first_difference() for case in self.differing[:3])
            if len(self.differing) > 3:
                text += f"; {len(self.differing) - 3} more differ"
        return f"{text}; {self.verdict()}"

    def text(self) -> str:
        """The headline with what was compared: the model card's line."""
        answered = "the GGUF file answered by " if self.kind == "gguf" else "the merged model answered by "
        note = f". {self.note}" if self.note else ""
        return (f"{self.headline()} (greedy, the trained adapter on the base it trained on, on {self.cases_from}; "
                f"{answered}{self.engine}){note}")


def check_verifiable(source: Path) -> Path:
    """The adapter folder the studio answers with, or an ExportCheckError saying why `source` has none."""
    source = Path(source)
    for folder in (source, source / "adapter"):
        if (folder / "adapter_config.json").is_file():
            return folder
    raise ExportCheckError(f"{source}: not a run or adapter folder, so there is no trained adapter to compare the "
                           "export with (verify an export made from a run)")


def export_kind(export: Path) -> str:
    """"gguf" for a .gguf file, "merged" for a model folder; ExportCheckError for anything else."""
    export = Path(export)
    if export.suffix.lower() == ".gguf" and export.is_file():
        return "gguf"
    if (export / "config.json").is_file() and not (export / "adapter_config.json").is_file():
        return "merged"
    raise ExportCheckError(f"{export}: neither a GGUF file nor a merged model folder")


def choose_engine(kind: str, engine: str = "auto") -> str:
    """What answers for an export: llama.cpp for a GGUF when llama-cpp-python is installed (or asked for)."""
    import importlib.util

    if engine not in ENGINES:
        raise ExportCheckError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if kind == "merged":
        if engine == "llama.cpp":
            raise ExportCheckError("llama.cpp answers a GGUF file, not a merged model folder")
        return TRANSFORMERS
    if engine == "transformers":
        return TRANSFORMERS_GGUF
    installed = importlib.util.find_spec("llama_cpp") is not None
    if engine == "llama.cpp" and not installed:
        raise ExportCheckError("llama-cpp-python is not installed (pip install llama-cpp-python)")
    return LLAMA_CPP if installed else TRANSFORMERS_GGUF


def check_cases(source: Path, limit: int = DEFAULT_CASES) -> EvalSet:
    """The first `limit` cases of the run's held-out split, else of its training examples (last turn each)."""
    from studio.core.config.settings import ConfigError, load_config
    from studio.core.data.issues import DataError
    from studio.core.data.loading import training_data

    adapter = check_verifiable(source)
    run_dir = adapter.parent if adapter.name == "adapter" else adapter
    if not (run_dir / "run.toml").is_file():
        raise ExportCheckError(f"{adapter}: no run.toml beside the adapter, so no examples to compare on")
    try:
        config = load_config(run_dir / "run.toml")
    except ConfigError as error:
        raise ExportCheckError(str(error)) from None
    try:
        if config.data.eval_file or config.data.eval_fraction > 0:
            cases, words = held_out_set(run_dir, turns="last").cases, "held-out examples"
        else:
            data = training_data(config.data)
            cases, words = cases_from_examples(data.examples, data.lines, turns="last"), "training examples"
    except (EvalSetError, DataError, OSError) as error:  # the run's data moved or changed since it trained
        raise ExportCheckError(str(error)) from None
    if not cases:
        raise ExportCheckError(f"{run_dir}: the run's data has no assistant turns to compare replies on")
    cases = cases[:max(1, limit)]
    return EvalSet(CHECK_FOLDER, f"{len(cases)} of the run's {words}", cases)


def run_check(source: Path, export: Path, *, engine: str = "auto", limit: int = DEFAULT_CASES,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, task: TaskState = NO_TASK) -> ExportVerification:
    """Answer the check's cases with the studio's model (`source`: a run or adapter folder), then with the export
    (a merged folder or GGUF file), one model in memory at a time, and compare the replies case by case.
    `task.progress(done, total, message)` over both halves; a cancelled check returns with status "cancelled"."""
    export = Path(export).resolve()
    kind = export_kind(export)
    answered_by = choose_engine(kind, engine)
    eval_set = check_cases(source, limit)
    cases = eval_set.cases
    folder = eval_home(Path(source)) / EVALS_FOLDER / CHECK_FOLDER
    total = 2 * len(cases)
    result = ExportVerification(export, kind, answered_by, "cancelled", folder / safe_name(export.name, "export"),
                                cases_from=eval_set.source)

    def studio_progress(done: int, _total: int, message: str) -> None:
        task.progress(done, total, f"studio: {message}")

    # The check's folders are the studio's own scratch: what they held for an earlier adapter or export is replaced.
    studio = run_eval(EvalJob(source, eval_set, metrics=["exact"], output_dir=folder / STUDIO_FOLDER,
                              max_new_tokens=max_new_tokens, with_loss=False, replace_other_settings=True),
                      task=reporting(task, studio_progress))
    if studio.status != "completed":
        return result
    studio_column = studio.columns[0]
    studio_replies = {r["case"]: r["reply"] for r in read_results(studio.results_path)
                      if r["model"] == studio_column}

    def export_progress(done: int, _total: int, message: str) -> None:
        task.progress(len(cases) + done, total, f"export: {message}")

    exporting = reporting(task, export_progress)

    if answered_by == LLAMA_CPP:
        try:
            replies = _llama_cpp_replies(export, cases, max_new_tokens, result.folder, exporting)
        except LlamaCrashed as crash:
            # llama.cpp's CPU backend repacks q8_0/q4_0 weights into interleaved layouts by default ("extra buffer
            # types"); when that crashes, the file is checked with the plain layout, and the result says so.
            exporting.progress(0, len(cases), f"{crash}; again with CPU weight repacking off")
            try:
                replies = _llama_cpp_replies(export, cases, max_new_tokens, result.folder, exporting, repack=False)
            except LlamaCrashed as again:
                raise ExportCheckFailed(f"{crash}; with CPU weight repacking off too: {again.why} (no score "
                                        "recorded; llama.cpp's words are in "
                                        f"{result.folder / 'llama.log'})") from None
            if replies is not None:
                result.note = REPACKING_CRASHED
    else:
        replies = _transformers_replies(export, kind, eval_set, max_new_tokens, result.folder, exporting)
    if replies is None:
        return result
    from studio.core.metrics.tool_calls import tool_call_match

    tokenizer = _check_tokenizer(Path(source))
    for case in cases:
        reply, truncated, error = replies[case.id]
        check = CaseCheck(case.id, case.question, studio_replies[case.id], reply, truncated, error,
                          expected=case.expected, task_studio=tool_call_match(studio_replies[case.id],
                                                                              case.expected).passed,
                          task_export=not error and tool_call_match(reply, case.expected).passed)
        if not check.identical and not error and tokenizer is not None:
            check.differs_at, check.studio_token, check.export_token = first_differing_token(
                tokenizer, check.studio.strip(), check.export.strip())
        result.cases.append(check)
    if kind == "gguf":
        result.type_label = gguf_type_label(export)
    result.status = "completed"
    task.progress(total, total, result.headline())
    return result


def _check_tokenizer(source: Path):
    """The trained adapter's tokenizer (the one the run trained with), to count tokens in; None if it cannot load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(check_verifiable(source)), trust_remote_code=False)
    except (OSError, ValueError, ExportCheckError):
        return None


def first_differing_token(tokenizer, studio: str, export: str) -> tuple[int, str, str]:
    """(position from 1, the trained model's token there, the export's) of the first token where two replies part;
    an empty token where one reply has ended."""
    a = tokenizer.encode(studio, add_special_tokens=False)
    b = tokenizer.encode(export, add_special_tokens=False)
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    word = lambda ids: tokenizer.decode(ids[at:at + 1]) if at < len(ids) else "(end)"  # noqa: E731
    return at + 1, word(a), word(b)


def gguf_type_label(path: Path) -> str:
    """"Q4_K_M" from a GGUF file's general.file_type; "" when it has none."""
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
        return gguf.LlamaFileType(int(field.parts[-1][0])).name.removeprefix("MOSTLY_").removeprefix("ALL_") \
            if field is not None else ""
    except (ValueError, OSError):
        return ""


Replies = dict[str, tuple[str, bool, str]]
"""case id -> (reply, truncated, error)."""


def _transformers_replies(export: Path, kind: str, eval_set: EvalSet, max_new_tokens: int, folder: Path,
                          task: TaskState) -> Replies | None:
    """The export's replies through the eval's own batched greedy generation; None when cancelled."""
    from studio.core.chat.model import ChatModel
    from studio.core.eval.gguf import load_gguf_chat

    task.progress(0, len(eval_set.cases), f"loading {export}")
    chat = load_gguf_chat(export) if kind == "gguf" else ChatModel.load(export)
    try:
        outcome = run_eval(EvalJob(export, eval_set, metrics=["exact"], output_dir=folder, fresh=True,
                                   max_new_tokens=max_new_tokens, with_loss=False, replace_other_settings=True),
                           task=task, chat=chat)
    finally:
        chat.unload()
    if outcome.status != "completed":
        return None
    return {r["case"]: (r["reply"], bool(r.get("truncated")), "") for r in read_results(outcome.results_path)}


def llama_child_command(job: Path, replies: Path) -> list[str]:
    """The child that runs llama.cpp (studio.core.eval.llama_child)."""
    return [sys.executable, "-m", llama_child.__name__, str(job), str(replies)]


class LlamaCrashed(Exception):
    """The llama.cpp child ended without answering every case: "llama.cpp crashed while loading the file (killed
    by SIGSEGV): its last words"."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def _llama_cpp_replies(export: Path, cases: list[EvalCase], max_new_tokens: int, folder: Path, task: TaskState,
                       *, repack: bool = True,
                       command: Callable[[Path, Path], list[str]] | None = None) -> Replies | None:
    """The GGUF file's replies in llama.cpp: its embedded chat template, greedy, stopping at its end-of-generation
    token (what `llama-cli` and Ollama run); None when cancelled. Written to results.jsonl like an eval's.
    `repack=False` turns off the CPU backend's weight repacking (llama_child).

    llama.cpp runs in a child process (see llama_child): a crash in it never ends the window, and is raised as
    LlamaCrashed (saying whether it came while loading the file or answering a case), never read as replies that
    differ. The replies it gave before are in llama-replies.jsonl; results.jsonl is written only for a whole set."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_FILE).unlink(missing_ok=True)  # an earlier check's results are not this one's
    job_path, replies_path = folder / "llama-job.json", folder / "llama-replies.jsonl"
    job_path.write_text(json.dumps({"model_path": str(export), "n_ctx": LLAMA_CTX, "max_new_tokens": max_new_tokens,
                                    "repack": repack,
                                    "cases": [{"id": c.id, "messages": c.messages()} for c in cases]},
                                   ensure_ascii=False), encoding="utf-8")
    replies_path.write_text("", encoding="utf-8")
    task.progress(0, len(cases), f"loading {export} in llama.cpp")
    with (folder / "llama.log").open("w", encoding="utf-8") as log:
        child = subprocess.Popen((command or llama_child_command)(job_path, replies_path), stdout=log,
                                 stderr=subprocess.STDOUT)
        answered = 0
        try:
            while True:
                ended = child.poll() is not None
                lines = [json.loads(line) for line in replies_path.read_text(encoding="utf-8").splitlines()
                         if line.endswith("}")]
                if len(lines) > answered:
                    answered = len(lines)
                    task.progress(answered, len(cases), f"llama.cpp: {answered}/{len(cases)}")
                if ended:
                    break
                if task.cancelled():
                    child.kill()
                    child.wait()
                    return None
                time.sleep(0.1)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    replies: Replies = {line["case"]: (line["reply"], bool(line["truncated"]), line["error"]) for line in lines}
    if len(replies) < len(cases):  # a crash after the last reply (in llama.cpp's teardown) took nothing away
        log = (folder / "llama.log").read_text(encoding="utf-8", errors="replace")
        words = [line for line in log.strip().splitlines() if line.strip() and line != llama_child.LOADED]
        why = describe_exit(child.returncode) + (f": {words[-1].strip()}" if words else "")
        if llama_child.LOADED not in log.splitlines():
            where = "while loading the file"
        else:
            where = f"while answering case {cases[len(replies)].id}, after {len(replies)} of {len(cases)}"
        ended_how = "crashed" if child.returncode < 0 else "failed"  # a signal, or an error it exited with
        raise LlamaCrashed(f"llama.cpp {ended_how} {where} ({why})", why)
    records = [{"model": "gguf", "case": case.id, "key": case.key, "prompt": case.messages(),
                "expected": case.expected, "reply": replies[case.id][0], "truncated": replies[case.id][1],
                "error": replies[case.id][2], "answered_by": LLAMA_CPP, "max_new_tokens": max_new_tokens}
               for case in cases]
    rewrite_results(folder / RESULTS_FILE, records)
    return replies
