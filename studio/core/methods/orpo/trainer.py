"""ORPO's trainer half: TRL's ORPOTrainer (TRL 1.x keeps it among its experimental trainers)."""

from __future__ import annotations

from typing import Any

from studio.core.methods.training import MethodTraining


class OrpoTraining(MethodTraining):
    def trainer_class(self) -> type:
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**common, beta=self.settings.beta, max_length=self.config.training.max_length,
                          dataset_num_proc=None)


TRAINING = OrpoTraining
