"""SFT's trainer half: TRL's SFTTrainer on the data `train.prepare` tokenised (labels from the chat template)."""

from __future__ import annotations

from typing import Any

from studio.core.methods.training import MethodTraining


class SftTraining(MethodTraining):
    def trainer_class(self) -> type:
        from trl import SFTTrainer

        return SFTTrainer

    def args(self, common: dict[str, Any], *, offloading: bool, padding_free: bool = False) -> Any:
        """The dataset arrives pre-tokenised (data.tokens.encode_example) and already truncated to max_length
        (train.prepare.truncate_dataset), which TRL would refuse to do for padding-free batches."""
        from trl import SFTConfig

        t = self.config.training
        return SFTConfig(
            **common,
            max_length=None if padding_free else t.max_length,
            padding_free=padding_free,
            dataset_num_proc=None,
            packing=t.packing,
            assistant_only_loss=False,  # labels arrive pre-computed by data.tokens.encode_example
            completion_only_loss=False,
            # TRL's offloading needs a CUDA device (it fails to build on a CPU-only torch); the run's log says so.
            activation_offloading=offloading,
        )


TRAINING = SftTraining
