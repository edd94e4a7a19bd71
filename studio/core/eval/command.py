"""`finetune-studio eval`'s work, headless: its arguments made into an EvalJob (every user error raised as one
EvalInputError line before a model is loaded) and the summary as a terminal table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from studio.core.eval.cases import EvalSetError, held_out_set, load_eval_set
from studio.core.eval.runner import DEFAULT_MAX_NEW_TOKENS, EvalError, EvalJob, EvalOutcome, check_request


class EvalInputError(EvalError):
    """Bad input to an eval: an unknown metric, a regex that does not compile, an eval set with no assistant
    turns, a data file with bad rows, a model that is not there, a GGUF file cut short, a name that is not a
    plain folder name, max new tokens below 1, a run still training."""


def build_job(model: str | Path, *, data: str | None = None, metrics: Sequence[str] = (), pattern: str | None = None,
              base: bool = False, adapters: Sequence[str | Path] = (), name: str | None = None,
              output: Path | None = None, last_turn: bool = False, **options: Any) -> EvalJob:
    """An EvalJob from the command's arguments: the eval set is `data` (a file, saved dataset or Hub id), else
    the run's held-out split. `options` go to EvalJob as they are (max_new_tokens, batch_size, fresh, ...)."""
    from studio.core.data.issues import DataError
    from studio.core.metrics.registry import DEFAULT_METRICS, MetricError
    from studio.core.models.source import missing_local_model

    try:  # a bad name, max new tokens below 1, a run still training: before the eval set is read
        check_request(model, adapters, name=name, max_new_tokens=options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    except EvalError as error:
        raise EvalInputError(str(error)) from None
    turns = "last" if last_turn else "all"
    model_path = Path(str(model))
    is_run = (model_path / "run.toml").is_file() or (model_path / "adapter_config.json").is_file()
    if not is_run and (reason := missing_local_model(str(model))) is not None:
        raise EvalInputError(f"{model}: {reason}")
    gguf = options.get("gguf")
    if gguf is not None:
        from studio.core.eval.gguf import check_gguf_file
        from studio.core.models.source import ModelLoadError

        try:  # before the eval set is read and the studio's columns generated: a bad file is known now
            check_gguf_file(Path(gguf))
        except ModelLoadError as error:
            raise EvalInputError(f"--gguf {error}") from None
    try:
        if data:
            eval_set = load_eval_set(data, turns=turns)
        elif (run := _run_dir(model_path)) is not None:
            eval_set = held_out_set(run, turns=turns)
        else:
            raise EvalInputError(f"{model}: not a run directory, so there is no held-out split: give --data FILE")
        job = EvalJob(model=model, eval_set=eval_set, metrics=list(metrics) or list(DEFAULT_METRICS),
                      pattern=pattern, adapters=list(adapters), include_base=base, name=name, output_dir=output,
                      **options)
        job.build_metrics()
        job.check()
    except (EvalSetError, DataError, MetricError, EvalError) as error:
        raise EvalInputError(str(error)) from None
    return job


def _run_dir(path: Path) -> Path | None:
    if (path / "run.toml").is_file():
        return path
    if path.name == "adapter" and (path.parent / "run.toml").is_file():
        return path.parent
    return None


def format_summary(outcome: EvalOutcome) -> str:
    """A column per model, a row per metric (passed/total and mean score), then loss, perplexity, truncated."""
    summary = outcome.summary
    models = outcome.columns
    rows: list[list[str]] = [["", *models]]
    for metric in summary["metric_names"]:
        row = [metric]
        # tool_call passes a case that expects no call when the reply makes none: say how many expect one, so a
        # 10/10 earned on no-call cases is not read as a learned call (on the row when the columns agree).
        expecting = {summary["models"][m]["metrics"][metric].get("cases_expecting_a_call") for m in models}
        if len(expecting) == 1 and (count := expecting.pop()) is not None:
            row[0], expecting = f"{metric} ({count} expect a call)", set()
        for model in models:
            entry = summary["models"][model]["metrics"][metric]
            mean = f" ({entry['mean_score']:.2f})" if entry["mean_score"] is not None else ""
            note = (f", {entry['cases_expecting_a_call']} expect a call"
                    if expecting and entry.get("cases_expecting_a_call") is not None else "")
            row.append(f"{entry['passed']}/{entry['total']}{mean}{note}")
        rows.append(row)
        parts = {part for model in models for part in summary["models"][model]["metrics"][metric].get("parts", {})}
        for part in sorted(parts, key=["call_present", "right_function", "arguments_right", "valid_json",
                                       "no_call_expected"].index):
            row = [f"  {part.replace('_', ' ')}"]
            for model in models:
                counts = summary["models"][model]["metrics"][metric].get("parts", {}).get(part)
                row.append(f"{counts['passed']}/{counts['total']}" if counts else "")
            rows.append(row)
    for key, label in (("eval_loss", "eval loss"), ("perplexity", "perplexity")):
        rows.append([label] + [f"{v:.4g}" if (v := summary["models"][m][key]) is not None else "—" for m in models])
    rows.append(["cut at max tokens"] + [str(summary["models"][m]["truncated"]) for m in models])
    rows.append(["prompts cut to fit"] + [str(summary["models"][m].get("prompts_cut", 0)) for m in models])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                enumerate(zip(row, widths))).rstrip() for row in rows)
    notes = [f"{model} replies identical to {same['column']}'s: {same['identical']}/{same['total']} (read by "
             f"{summary['models'][model].get('read_by', 'transformers')})"
             for model in models if (same := summary["models"][model].get("identical_to"))]
    if (capped := summary.get("max_new_tokens_capped")) is not None:
        notes.append(f"max new tokens {capped['asked']} is beyond the model's context of {capped['context']} "
                     "positions: each reply was capped at the context less its prompt")
    if any(summary["models"][m].get("prompts_cut") for m in models):
        notes.append("prompts cut to fit: prompts longer than the context less max new tokens kept their last "
                     "tokens")
    if (beside := summary.get("written_beside")) is not None:
        notes.append(f"written to a new folder: {beside['folder']} holds an eval with other settings "
                     f"({beside['because']})")
    if notes:
        table += "\n" + "\n".join(notes)
    state = "" if summary["complete"] else " (incomplete: run the same command again to resume)"
    head = f"eval {summary['name']}: {summary['cases']} cases, {summary['eval_set']}{state}"
    return f"{head}\n{table}\nresults: {outcome.results_path}\nsummary: {outcome.summary_path}"
