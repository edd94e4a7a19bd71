"""SFT's settings half: supervised fine-tuning on the replies in the data, which `train.run` does itself."""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.methods.spec import DataShape, MethodSpec


@dataclass(slots=True)
class SftSettings:
    """SFT has no settings of its own: [training] and [data] hold every one it reads."""


METHOD = MethodSpec(
    name="sft",
    title="SFT",
    label="SFT (supervised)",
    help="sft (supervised: imitate the replies in the data)",
    settings=SftSettings,
    data=DataShape(
        note="Reads conversations, instruction/response or prompt/completion records, or plain text.",
        columns=("Turns", "Prompt", "Response"),
        kind="conversation",
    ),
    continue_label="SFT (more supervised steps)",
    scores_while_training=True,
)
