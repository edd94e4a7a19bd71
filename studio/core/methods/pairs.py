"""What DPO, ORPO and KTO share: the pair record, its columns and the plots of TRL's preference metrics."""

from __future__ import annotations

from typing import Any

from studio.core.methods.spec import LivePlot

PAIR_COLUMNS = ("Prompt", "Chosen", "Rejected")
PAIR_NOTE = "Reads prompt / chosen / rejected records"

PREFERENCE_PLOTS = (
    LivePlot("Reward margin", ("rewards/margins",), ("chosen − rejected",), "reward"),
    LivePlot("Reward accuracy", ("rewards/accuracies",), ("chosen preferred",), "share"),
    LivePlot("Log-probabilities", ("logps/chosen", "logps/rejected"), ("chosen", "rejected"), "log-probability"),
)
"""TRL's DPO, ORPO and KTO trainers log the reward margin (how much higher the chosen reply is rewarded than the
rejected one), the reward accuracy (the share of pairs where it is) and the log-probabilities of both replies."""


def record_keys(record: Any) -> set[str]:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    return set(record)


def shown_keys(keys: set[str]) -> str:
    return ", ".join(sorted(map(str, keys))) or "none"


def is_pair(keys: set[str]) -> bool:
    return {"chosen", "rejected"} <= keys


def detect_pair(record: Any, method: str) -> tuple[str, str]:
    """A prompt/chosen/rejected record, as DPO and ORPO read it."""
    keys = record_keys(record)
    if is_pair(keys):
        return "preference", "keys 'chosen' and 'rejected' (paired preference)"
    raise ValueError(f"{method} trains on pairs: needs 'chosen' and 'rejected' (and 'prompt', unless both are whole "
                     f"conversations) (keys: {shown_keys(keys)})")
