"""DPO's settings half: Direct Preference Optimisation on prompt/chosen/rejected pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.core.methods.pairs import PAIR_COLUMNS, PAIR_NOTE, PREFERENCE_PLOTS, detect_pair
from studio.core.methods.spec import DataShape, MethodSpec


@dataclass(slots=True)
class DpoSettings:
    """DPO's own settings, read when training.method = dpo (TRL's DPOConfig names)."""

    beta: float = field(
        default=0.1,
        metadata={"label": "Beta",
                  "help": "How far the tuned model may move from the base (a low beta lets it move further). TRL's "
                          "beta.", "above": 0.0, "max": 100.0, "step": 0.01, "decimals": 3},
    )
    sft_weight: float = field(
        default=0.0,
        metadata={"label": "Supervised weight",
                  "help": "The weight of a supervised loss on the chosen replies added to the DPO loss (TRL's 'sft' "
                          "loss type beside 'sigmoid', as RPO does). 0 = plain DPO, which only moves the two replies' "
                          "likelihoods apart; 1.0 also teaches the chosen replies, for a model that cannot write them "
                          "yet (no SFT first).", "min": 0.0, "max": 10.0, "step": 0.1, "decimals": 2},
    )


def _keep_supervised_term(settings: Any) -> None:
    settings.sft_weight = max(settings.sft_weight, 1.0)


METHOD = MethodSpec(
    name="dpo",
    title="DPO",
    label="DPO (preference pairs)",
    help="dpo (Direct Preference Optimisation: prefer each prompt's chosen reply over its rejected one; reads "
         "prompt/chosen/rejected records)",
    schema_1_keys=(("beta", "beta"), ("dpo_sft_weight", "sft_weight")),
    settings=DpoSettings,
    data=DataShape(note=PAIR_NOTE + ": the model learns to prefer the chosen reply.", columns=PAIR_COLUMNS, kind="pair",
                   needs="prompt/chosen/rejected", detect=lambda record: detect_pair(record, "dpo")),
    plots=PREFERENCE_PLOTS,
    checkpoints_every_layer=True,
    reference="the reference model is a frozen copy of that adapter, as it was before this run",
    continue_label="DPO",
    continue_note="Continuing an adapter: DPO at the SFT run's learning rate without a supervised term unlearns what "
                  "SFT taught (measured: 7 of 10 right tool calls became 0 of 10). 'Continue with…' sets a tenth of "
                  "that rate and Supervised weight 1 (10 of 10 kept).",
    continued_rate_share=0.1,
    continue_settings=_keep_supervised_term,
)
