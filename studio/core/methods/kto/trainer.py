"""KTO's trainer half: TRL's KTOTrainer on replies labelled desirable or not."""

from __future__ import annotations

from typing import Any

from studio.core.methods.training import MethodTraining


class KtoTraining(MethodTraining):
    def trainer_class(self) -> type:
        from trl import KTOTrainer

        return KTOTrainer

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        from trl import KTOConfig

        return KTOConfig(**common, beta=self.settings.beta, max_length=self.config.training.max_length,
                         dataset_num_proc=None, activation_offloading=offloading)


TRAINING = KtoTraining
