"""ORPO's settings half: odds-ratio preference optimisation, the chosen replies and the preference in one loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.core.methods.pairs import PAIR_COLUMNS, PAIR_NOTE, PREFERENCE_PLOTS, detect_pair
from studio.core.methods.spec import DataShape, MethodSpec


@dataclass(slots=True)
class OrpoSettings:
    """ORPO's own settings, read when training.method = orpo (TRL's ORPOConfig names)."""

    beta: float = field(
        default=0.1,
        metadata={"label": "Beta",
                  "help": "The weight of the preference term against the loss on the chosen replies. TRL's beta.",
                  "above": 0.0, "max": 100.0, "step": 0.01, "decimals": 3},
    )


METHOD = MethodSpec(
    name="orpo",
    title="ORPO",
    label="ORPO (pairs, one pass)",
    help="orpo (odds-ratio preference optimisation: learns the chosen replies and the preference in one loss, no "
         "reference pass; reads prompt/chosen/rejected records)",
    schema_1_keys=(("beta", "beta"),),
    settings=OrpoSettings,
    data=DataShape(note=PAIR_NOTE + "; learns the chosen replies and the preference at once.", columns=PAIR_COLUMNS,
                   kind="pair", needs="prompt/chosen/rejected", detect=lambda record: detect_pair(record, "orpo")),
    plots=PREFERENCE_PLOTS,
    checkpoints_every_layer=True,
    continue_label="ORPO",
    continue_note="Continuing an adapter: ORPO's loss has its own supervised term, which keeps what SFT taught at the "
                  "SFT run's learning rate (measured: 7 of 10 right tool calls became 9 of 10).",
)
