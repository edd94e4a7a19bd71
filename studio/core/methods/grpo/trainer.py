"""GRPO's trainer half: TRL's GRPOTrainer, rewarded by the Evaluate tab's metrics.

Each reward is a metric (`core.metrics`) scoring a generated reply against the prompt's expected reply from 0 to 1
(tool-call match with its partial credit), weighted, plus an optional length penalty.
"""

from __future__ import annotations

from typing import Any, Callable

from studio.core.config.settings import ConfigError
from studio.core.methods.grpo.settings import parse_rewards
from studio.core.methods.reading import PreferenceData
from studio.core.methods.training import MethodTraining
from studio.core.metrics.registry import Metric, MetricError, build_metric

SECTION = __name__.split(".")[-2]
"""This method's section in the config, which its errors name ([grpo] rewards = …)."""


def _completion_text(completion: Any) -> str:
    """A generated reply as text: TRL passes a string, or for a conversational prompt a list of turns."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)


class MetricReward:
    """A TRL reward function from one metric: each completion's score against its prompt's expected reply.

    A class, not a closure, because TRL names the reward by `__name__` (`rewards/<name>/mean` in the logs) and
    reward functions must pickle for multi-process runs.
    """

    def __init__(self, metric: Metric):
        self.metric = metric
        self.__name__ = metric.name

    def __call__(self, prompts: list[Any], completions: list[Any], expected: list[str] | None = None,
                 **kwargs: Any) -> list[float]:
        wanted = expected if expected is not None else [""] * len(completions)
        return [float(self.metric(_completion_text(c), e).score) for c, e in zip(completions, wanted)]


class LengthPenalty:
    """Minus the reply's share of max_completion_length (its weight is the section's length_penalty)."""

    __name__ = "length_penalty"

    def __init__(self, max_completion_length: int):
        self.max_completion_length = max_completion_length

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None,
                 **kwargs: Any) -> list[float]:
        if completion_ids is not None:
            lengths = [len(ids) for ids in completion_ids]
        else:  # characters stand in for tokens only when TRL gives no ids
            lengths = [len(_completion_text(c)) for c in completions]
        return [-min(1.0, n / self.max_completion_length) for n in lengths]


def reward_functions(config: Any) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """(reward functions, their weights) from the section's rewards and length_penalty; ConfigError names an unknown
    metric or a regex reward without a pattern."""
    s = getattr(config, SECTION)
    try:
        rewards = parse_rewards(s.rewards)
    except ValueError as error:
        raise ConfigError(f"{SECTION}.rewards", s.rewards, str(error)) from None
    functions: list[Callable[..., list[float]]] = []
    weights: list[float] = []
    for name, weight in rewards:
        if name.strip().lower() == "regex" and not s.reward_pattern:
            raise ConfigError(f"{SECTION}.reward_pattern", s.reward_pattern,
                              f"the regex reward needs a pattern: set {SECTION}.reward_pattern")
        try:
            metric = build_metric(name, pattern=s.reward_pattern or None)
        except MetricError as error:
            # The metric names the pattern when the pattern is at fault (it does not compile), else the metric.
            field = "rewards" if str(error).startswith("unknown metric") else "reward_pattern"
            raise ConfigError(f"{SECTION}.{field}", getattr(s, field), str(error)) from None
        if any(f.__name__ == metric.name for f in functions):
            raise ConfigError(f"{SECTION}.rewards", s.rewards, f"{metric.name} is named twice")
        functions.append(MetricReward(metric))
        weights.append(weight)
    if s.length_penalty > 0:
        functions.append(LengthPenalty(s.max_completion_length))
        weights.append(s.length_penalty)
    return functions, weights


class GrpoTraining(MethodTraining):
    def check(self) -> None:
        reward_functions(self.config)  # unknown metric, a reward pattern that does not compile

    def check_data(self, train: PreferenceData) -> None:
        missing = [e for e in train.examples if not e["expected"]]
        functions = reward_functions(self.config)[0]
        needing = [f.__name__ for f in functions if isinstance(f, MetricReward) and f.metric.name != "regex"]
        if needing and len(missing) == len(train.examples):
            raise ConfigError(f"{SECTION}.rewards", self.settings.rewards,
                              f"{', '.join(needing)} score a reply against the expected one, and no row of "
                              f"{train.path} has one: give each prompt a 'completion' (or use chat records, "
                              "whose last reply is the expected one)")

    def trainer_class(self) -> type:
        from trl import GRPOTrainer

        return GRPOTrainer

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        from trl import GRPOConfig

        s = self.settings
        _, weights = reward_functions(self.config)
        return GRPOConfig(**common, beta=s.kl_coefficient, num_generations=s.num_generations,
                          temperature=s.generation_temperature, max_completion_length=s.max_completion_length,
                          reward_weights=weights)

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"reward_funcs": reward_functions(self.config)[0]}


TRAINING = GrpoTraining
