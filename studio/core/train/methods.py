"""The training methods beyond SFT: TRL's DPO, ORPO, KTO and GRPO trainers on the run's own loading.

`run.run_training` does everything a run does — QLoRA loading, LoRA config, StudioCallback, atomic checkpoints,
stop and resume, the adapter check, the honest ending — for every method; a `TrainingMethod` supplies only what
differs: how the data is read (`core.train.preference_data`), the trainer class, its config and, for GRPO, the
reward functions. TRL's trainers are used as they are; their metrics (reward margins and accuracies, chosen and
rejected log-probabilities, each reward's mean, the reward spread, completion lengths, KL) reach events.jsonl
through the callback's `metrics`.

GRPO's rewards are the Evaluate tab's metrics (`core.metrics`), each scoring a generated reply against the
prompt's expected reply from 0 to 1 (tool-call match with its partial credit), weighted, plus an optional
length penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.core.config.settings import ConfigError, RunConfig, parse_rewards
from studio.core.metrics.registry import Metric, MetricError, build_metric
from studio.core.runs.events import Emit
from studio.core.train.preference_data import PreferenceData, preference_splits, preference_training_data

PREFERENCE_METHODS = ("dpo", "orpo", "kto", "grpo")


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
    """Minus the reply's share of max_completion_length (its weight is training.length_penalty)."""

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


def reward_functions(config: RunConfig) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """(reward functions, their weights) from training.rewards and training.length_penalty; ConfigError names an
    unknown metric or a regex reward without a pattern."""
    t = config.training
    try:
        rewards = parse_rewards(t.rewards)
    except ValueError as error:
        raise ConfigError("training.rewards", t.rewards, str(error)) from None
    functions: list[Callable[..., list[float]]] = []
    weights: list[float] = []
    for name, weight in rewards:
        if name.strip().lower() == "regex" and not t.reward_pattern:
            raise ConfigError("training.reward_pattern", t.reward_pattern,
                              "the regex reward needs a pattern: set training.reward_pattern")
        try:
            metric = build_metric(name, pattern=t.reward_pattern or None)
        except MetricError as error:
            # The metric names the pattern when the pattern is at fault (it does not compile), else the metric.
            key = "training.rewards" if str(error).startswith("unknown metric") else "training.reward_pattern"
            raise ConfigError(key, getattr(t, key.split(".")[1]), str(error)) from None
        if any(f.__name__ == metric.name for f in functions):
            raise ConfigError("training.rewards", t.rewards, f"{metric.name} is named twice")
        functions.append(MetricReward(metric))
        weights.append(weight)
    if t.length_penalty > 0:
        functions.append(LengthPenalty(t.max_completion_length))
        weights.append(t.length_penalty)
    return functions, weights


def _needs_expected(functions: list[Callable[..., list[float]]]) -> list[str]:
    return [f.__name__ for f in functions if isinstance(f, MetricReward) and f.metric.name != "regex"]


@dataclass
class TrainingMethod:
    """What a method beyond SFT adds to `run.run_training`."""

    config: RunConfig

    @property
    def name(self) -> str:
        return self.config.training.method

    def read(self, emit: Emit) -> tuple[PreferenceData, PreferenceData | None]:
        """The train and eval data (the eval file's, if any), checked for this method."""
        data = self.config.data
        train = preference_training_data(data, self.name, emit=emit)
        eval_data = preference_training_data(data, self.name, data.eval_file, emit=emit) if data.eval_file else None
        if self.name == "grpo":
            missing = [e for e in train.examples if not e["expected"]]
            needing = _needs_expected(reward_functions(self.config)[0])
            if needing and len(missing) == len(train.examples):
                raise ConfigError("training.rewards", self.config.training.rewards,
                                  f"{', '.join(needing)} score a reply against the expected one, and no row of "
                                  f"{train.path} has one: give each prompt a 'completion' (or use chat records, "
                                  "whose last reply is the expected one)")
        return train, eval_data

    def datasets(self, train: PreferenceData, eval_data: PreferenceData | None) -> tuple[Any, Any]:
        return preference_splits(self.config, train, eval_data)

    def trainer_class(self) -> type:
        if self.name == "dpo":
            from trl import DPOTrainer

            return DPOTrainer
        if self.name == "kto":
            from trl import KTOTrainer

            return KTOTrainer
        if self.name == "grpo":
            from trl import GRPOTrainer

            return GRPOTrainer
        from trl.experimental.orpo import ORPOTrainer  # TRL 1.x keeps ORPO among its experimental trainers

        return ORPOTrainer

    def args(self, hardware: Any, output_dir: Path, *, has_eval: bool) -> Any:
        """The method's TRL config: the shared TrainingArguments (factories.training_arguments) and its own."""
        from studio.core.plan.speedups import activation_offloading_applies
        from studio.core.train.factories import training_arguments

        t = self.config.training
        common = training_arguments(self.config, hardware, output_dir, has_eval=has_eval)
        offloading = activation_offloading_applies(self.config, hardware.device)
        if self.name == "dpo":
            from trl import DPOConfig

            # The supervised term rides on TRL's own multi-loss DPO: loss_type ["sigmoid", "sft"] with weights.
            losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.dpo_sft_weight]} if t.dpo_sft_weight > 0 else {}
            return DPOConfig(**common, beta=t.beta, max_length=t.max_length, dataset_num_proc=None,
                             activation_offloading=offloading, **losses)
        if self.name == "kto":
            from trl import KTOConfig

            return KTOConfig(**common, beta=t.beta, max_length=t.max_length, dataset_num_proc=None,
                             activation_offloading=offloading)
        if self.name == "grpo":
            from trl import GRPOConfig

            _, weights = reward_functions(self.config)
            return GRPOConfig(**common, beta=t.kl_coefficient, num_generations=t.num_generations,
                              temperature=t.generation_temperature,
                              max_completion_length=t.max_completion_length, reward_weights=weights)
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**common, beta=t.beta, max_length=t.max_length, dataset_num_proc=None)

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the method's trainer takes beyond SFTTrainer's."""
        if self.name == "grpo":
            return {"reward_funcs": reward_functions(self.config)[0]}
        return {}


def training_method(config: RunConfig) -> TrainingMethod | None:
    """The method object for a run beyond SFT; None for sft, which run.run_training does itself."""
    if config.training.method == "sft":
        return None
    if config.training.method not in PREFERENCE_METHODS:
        raise ConfigError("training.method", config.training.method,
                          f"must be one of sft, {', '.join(PREFERENCE_METHODS)}")
    return TrainingMethod(config)
