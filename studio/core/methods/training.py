"""What every method's trainer half shares: the base of what a method adds to `train.run.run_training`.

`run_training` does everything a run does — QLoRA loading, LoRA config, StudioCallback, atomic checkpoints, stop
and resume, the adapter check, the honest ending — for every method; a `MethodTraining` supplies what differs: the
trainer class, its config and extra arguments and, for a method with records of its own, how they are read
(`methods.reading`). TRL's trainers are used as they are; their metrics reach events.jsonl through the callback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.core.methods.reading import PreferenceData, preference_splits, preference_training_data
from studio.core.methods.registry import method
from studio.core.methods.spec import MethodSpec
from studio.core.runs.events import Emit


@dataclass
class MethodTraining:
    """A run's method as its trainer sees it; each method's trainer half subclasses it."""

    config: Any
    """The RunConfig."""

    @property
    def spec(self) -> MethodSpec:
        return method(self.config.training.method)

    @property
    def settings(self) -> Any:
        """The method's own section of the config ([dpo], [grpo], …)."""
        return getattr(self.config, self.spec.name)

    @property
    def reads_own_records(self) -> bool:
        """False: the run reads and tokenises SFT data itself (data.loading, train.prepare)."""
        return self.spec.reads_own_records

    def check(self) -> None:
        """What only the trainer half can check before a run folder exists (GRPO: the rewards' metrics)."""

    def read(self, emit: Emit | None) -> tuple[PreferenceData, PreferenceData | None]:
        """The train and eval data (the eval file's, if any), read as this method reads them and checked."""
        data = self.config.data
        name = self.spec.name
        train = preference_training_data(data, name, emit=emit)
        eval_data = preference_training_data(data, name, data.eval_file, emit=emit) if data.eval_file else None
        self.check_data(train)
        return train, eval_data

    def check_data(self, train: PreferenceData) -> None:
        """What the method needs of the rows beyond their shape."""

    def datasets(self, train: PreferenceData, eval_data: PreferenceData | None) -> tuple[Any, Any]:
        return preference_splits(self.config, train, eval_data)

    def trainer_class(self) -> type:
        raise NotImplementedError

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        """The method's TRL config from the TrainingArguments every method shares (`common`, from
        train.factories.training_arguments) and its own settings; `offloading`: TRL's activation offloading applies."""
        raise NotImplementedError

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the method's trainer takes beyond SFTTrainer's."""
        return {}
