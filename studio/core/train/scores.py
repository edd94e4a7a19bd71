"""Scores while training: K held-out examples answered greedily by the model being trained and scored by one
metric, at every evaluation or every N steps, each scoring an `eval_scores` event (the Training tab's accuracy
curve beside the eval loss).

The cases are the eval split's first K, the same at every scoring so the curve compares like with like: the
rows of data.eval_file, or the data.eval_fraction rows `data.split.held_out_split` holds out — the function
`prepare.encode_splits` splits the trainer's rows with, so a scored case is never trained on. Replies come from
the eval's own batched generation (`eval.generate.generate_batch`, left padding, greedy, no loss pass) on the
trainer's model with its adapter active, in eval mode and without gradients, and the model goes back to train
mode after. Greedy decoding draws no random numbers, so scoring leaves the run's RNG (and a resume) as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from studio.core.config.settings import RunConfig
from studio.core.data.split import held_out_split
from studio.core.data.table import LoadedData
from studio.core.eval.cases import EvalCase, cases_from_examples
from studio.core.metrics.registry import Metric, build_metric
from studio.core.metrics.tool_calls import expected_tool_calls
from studio.core.runs.events import Emit, make_event
from studio.core.system.tasks import NO_TASK, Task, TaskState

AUTO_METRIC = "auto"
REPLY_MARGIN_TOKENS = 16
"""Generated tokens allowed beyond the longest expected reply: enough to see a reply run on, cheap to cut."""
MAX_REPLY_TOKENS = 512


def held_out_cases(config: RunConfig, train_data: LoadedData, eval_data: LoadedData | None) -> list[EvalCase]:
    """The first training.score_examples cases of the run's eval split (each row's last assistant turn), [] when
    the run holds nothing out. `config` is the run's own, after data.eval_auto was applied."""
    wanted = config.training.score_examples
    if wanted <= 0:
        return []
    if eval_data is not None:
        examples, lines = list(eval_data.examples), list(eval_data.lines) if len(eval_data.lines) else None
    elif config.data.eval_fraction > 0:
        _, rows = held_out_split(len(train_data.examples), config.data.eval_fraction, config.training.seed)
        examples = [train_data.examples[i] for i in rows]
        lines = [train_data.lines[i] for i in rows] if len(train_data.lines) else None
    else:
        return []
    return cases_from_examples(examples, lines, turns="last")[:wanted]


def choose_metric(name: str, cases: Sequence[EvalCase]) -> Metric:
    """training.score_metric as a metric; "auto" is tool_call when an expected reply makes a tool call, else
    normalised (case, punctuation and spacing aside)."""
    if name == AUTO_METRIC:
        name = "tool_call" if any(expected_tool_calls(case.expected) for case in cases) else "normalised"
    return build_metric(name)


def reply_budget(tokenizer: Any, cases: Sequence[EvalCase]) -> int:
    """max_new_tokens for the scoring: the longest expected reply plus a margin (a model that never stops is cut
    there, marked truncated), at most MAX_REPLY_TOKENS."""
    longest = max((len(tokenizer(case.expected, add_special_tokens=False)["input_ids"]) for case in cases), default=0)
    return max(1, min(MAX_REPLY_TOKENS, longest + REPLY_MARGIN_TOKENS))


@dataclass(frozen=True)
class Scores:
    """One scoring: how many of the cases passed, the mean score, how many replies were cut at the budget."""

    passed: int
    total: int
    score: float
    truncated: int
    seconds: float

    def event(self, step: int, metric: str) -> dict[str, Any]:
        return make_event("eval_scores", step=step, metric=metric, passed=self.passed, total=self.total,
                          score=round(self.score, 6), truncated=self.truncated, seconds=round(self.seconds, 2))


def score_model(model: Any, tokenizer: Any, cases: Sequence[EvalCase], metric: Metric, *, max_new_tokens: int,
                task: TaskState = NO_TASK, batch_size: int | None = None) -> Scores | None:
    """Generate and score `cases` with `model` as it is (its adapter active); None when the task was cancelled.

    The model is put in eval mode (no dropout) and back in the mode it was in, whatever happens."""
    from studio.core.chat.model import ChatModel
    from studio.core.eval.generate import (
        GenerationStopped,
        choose_batch_size,
        generate_batch,
        prompt_ids,
    )

    started = time.monotonic()
    # No adapters named: generate_batch then uses the model as it is, the adapter being trained switched on.
    chat = ChatModel(model=model, tokenizer=tokenizer)
    if batch_size is None:
        longest = max(len(prompt_ids(tokenizer, case)) for case in cases) + max_new_tokens
        batch_size = choose_batch_size(chat, longest)
    was_training = model.training
    model.eval()
    passed = truncated = 0
    total_score = 0.0
    try:
        for start in range(0, len(cases), batch_size):
            batch = cases[start:start + batch_size]
            replies = generate_batch(chat, None, batch, max_new_tokens=max_new_tokens, task=task, with_loss=False)
            for case, reply in zip(batch, replies):
                result = metric(reply.reply, case.expected)
                passed += int(result.passed)
                total_score += float(result.score)
                truncated += int(reply.truncated)
    except GenerationStopped:
        return None
    finally:
        if was_training:
            model.train()
    return Scores(passed, len(cases), total_score / len(cases), truncated, time.monotonic() - started)


def describe_schedule(config: RunConfig, *, has_eval: bool) -> str | None:
    """When the run scores (a log line), or None when it never will (no cases, or no evaluation to score at)."""
    t = config.training
    if t.score_steps > 0:
        return f"every {t.score_steps} steps"
    if not has_eval or t.eval_strategy == "no":
        return None
    if t.eval_strategy == "epoch":
        return "after every epoch's evaluation"
    return f"at every evaluation ({t.eval_steps} steps)"


def scores_callback(config: RunConfig, tokenizer: Any, cases: Sequence[EvalCase], emit: Emit, *, has_eval: bool,
                    stop_requested: Callable[[], bool] = lambda: False) -> Any | None:
    """The TrainerCallback that scores `cases` during the run (None when it never would), after saying in a log
    event what is scored, with which metric and when. A scoring under way ends when `stop_requested()` (the run's
    Stop) turns true."""
    if config.training.score_examples <= 0:
        return None
    if not cases:
        emit(make_event("log", level="warning", message="Scores while training are off: the run holds out no eval "
                                                        "examples with an assistant reply (data.eval_fraction, "
                                                        "data.eval_file)"))
        return None
    when = describe_schedule(config, has_eval=has_eval)
    if when is None:
        emit(make_event("log", level="warning", message="Scores while training are off: the run never evaluates "
                                                        "(set training.score_steps, or an eval schedule)"))
        return None
    metric = choose_metric(config.training.score_metric, cases)
    budget = reply_budget(tokenizer, cases)
    emit(make_event("log", level="info", message=f"Scoring {len(cases)} held-out example(s) by {metric.name} {when} "
                                                 f"(replies up to {budget} tokens)"))
    from transformers import TrainerCallback

    every = config.training.score_steps
    stopping = Task(cancel=stop_requested)

    class TrainingScoresCallback(TrainerCallback):
        """Scores at each evaluation (score_steps 0) or every score_steps steps, on the main process only: the
        others wait at the next step's collective meanwhile, as they do for a checkpoint save."""

        scored_step = -1

        def on_evaluate(self, args, state, control, model=None, **kwargs):
            if every == 0:
                self._score(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every > 0 and state.global_step % every == 0:
                self._score(state, model)

        def _score(self, state, model) -> None:
            if not state.is_world_process_zero or model is None or state.global_step == self.scored_step:
                return
            self.scored_step = state.global_step
            scores = score_model(model, tokenizer, cases, metric, max_new_tokens=budget, task=stopping)
            if scores is not None:  # Stop was pressed meanwhile: no half scoring
                emit(scores.event(state.global_step, metric.name))

    return TrainingScoresCallback()


@dataclass(frozen=True)
class ScorePoint:
    step: int
    seconds: float
    """Training seconds at the scoring (the x value in training-time mode)."""
    passed: int
    total: int
    score: float
    metric: str

    @property
    def share(self) -> float:
        """The share passed, the accuracy curve's y value in [0, 1]."""
        return self.passed / self.total if self.total else 0.0

    @property
    def label(self) -> str:
        return f"{self.passed}/{self.total}"

    def describe(self) -> str:
        """The point's tooltip: "step 40: 3/8 passed (normalised, mean score 0.42)"."""
        return f"step {self.step}: {self.label} passed ({self.metric}, mean score {self.score:.2f})"


class ScoreSeries:
    """A run's `eval_scores` events as points; a resume from an earlier step drops the points after it (those
    steps are trained again), as RunMetrics does with the loss."""

    def __init__(self) -> None:
        self.points: list[ScorePoint] = []

    def feed(self, event: dict[str, Any], seconds: float = 0.0) -> str:
        """Take one event: "point" (one added), "truncated" (points dropped) or ""."""
        kind = event.get("event")
        if kind == "started":
            start = int(event.get("start_step") or 0)
            kept = [p for p in self.points if p.step <= start]
            if len(kept) != len(self.points):
                self.points = kept
                return "truncated"
        elif kind == "eval_scores" and int(event.get("total") or 0) > 0:
            self.points.append(ScorePoint(int(event.get("step") or 0), float(seconds), int(event.get("passed") or 0),
                                          int(event["total"]), float(event.get("score") or 0.0),
                                          str(event.get("metric") or "")))
            return "point"
        return ""


__all__ = ["AUTO_METRIC", "ScorePoint", "ScoreSeries", "Scores", "choose_metric", "describe_schedule", "held_out_cases",
           "reply_budget", "score_model", "scores_callback"]
