"""KTO's settings half: Kahneman-Tversky Optimisation on single replies labelled desirable or not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.core.methods.pairs import PREFERENCE_PLOTS, is_pair, record_keys, shown_keys
from studio.core.methods.spec import DataShape, MethodSpec


@dataclass(slots=True)
class KtoSettings:
    """KTO's own settings, read when training.method = kto (TRL's KTOConfig names)."""

    beta: float = field(
        default=0.1,
        metadata={"label": "Beta",
                  "help": "How far the tuned model may move from the base (a low beta lets it move further). TRL's "
                          "beta.", "above": 0.0, "max": 100.0, "step": 0.01, "decimals": 3},
    )


def detect_reply(record: Any) -> tuple[str, str]:
    """A prompt/completion/label record; a chosen/rejected pair is one desirable and one undesirable reply (as
    TRL's unpair_preference_dataset splits them)."""
    keys = record_keys(record)
    if {"completion", "label"} <= keys:
        return "unpaired_preference", "keys 'completion' and 'label' (unpaired preference)"
    if is_pair(keys):
        return "preference", ("keys 'chosen' and 'rejected': each pair is split into a desirable and an undesirable "
                              "reply")
    raise ValueError(f"kto needs 'completion' and 'label' (or 'chosen' and 'rejected') (keys: {shown_keys(keys)})")


METHOD = MethodSpec(
    name="kto",
    title="KTO",
    label="KTO (good / bad replies)",
    help="kto (Kahneman-Tversky Optimisation: single replies labelled desirable or not; reads prompt/completion/label "
         "records, or chosen/rejected pairs, split in two)",
    schema_1_keys=(("beta", "beta"),),
    settings=KtoSettings,
    data=DataShape(note="Reads prompt / completion / label records (label true = a good reply), or chosen/rejected "
                        "pairs.", columns=("Prompt", "Completion", "Label"), kind="reply",
                   needs="prompt/completion/label", detect=detect_reply, unpair=True, needs_both_labels=True),
    plots=PREFERENCE_PLOTS,
    checkpoints_every_layer=True,
    reference="the reference model is a frozen copy of that adapter, as it was before this run",
    continue_label="KTO",
    continue_note="Continuing an adapter: KTO at the SFT run's learning rate unlearns what SFT taught (measured: 7 of "
                  "10 right tool calls became 0 of 10). 'Continue with…' sets a tenth of that rate (10 of 10 kept).",
    continued_rate_share=0.1,
)
