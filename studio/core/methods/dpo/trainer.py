"""DPO's trainer half: TRL's DPOTrainer, with an optional supervised term on the chosen replies."""

from __future__ import annotations

from typing import Any

from studio.core.methods.training import MethodTraining


class DpoTraining(MethodTraining):
    def trainer_class(self) -> type:
        from trl import DPOTrainer

        return DPOTrainer

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        from trl import DPOConfig

        s = self.settings
        # The supervised term rides on TRL's own multi-loss DPO: loss_type ["sigmoid", "sft"] with weights.
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, s.sft_weight]} if s.sft_weight > 0 else {}
        return DPOConfig(**common, beta=s.beta, max_length=self.config.training.max_length, dataset_num_proc=None,
                         activation_offloading=offloading, **losses)


TRAINING = DpoTraining
