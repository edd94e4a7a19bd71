"""What the Config tab says about the draft beyond its fields: the fast path's line, the card the estimate is
compared with when there is no GPU. (The range of each number comes from the field's metadata:
`studio.core.config.settings.field_bounds`.)"""

from __future__ import annotations

from studio.core.config.presets import GPU_PRESETS, Preset
from studio.core.plan.speedups import FastPathPlan

__all__ = ["comparison_preset", "fast_path_line"]


def fast_path_line(plan: FastPathPlan) -> str:
    """The one line under the Fast path box: what is on here, or why nothing is (the tooltip has every part)."""
    if not plan.enabled:
        return "off: plain transformers + PEFT + TRL"
    if applied := plan.applied:
        return "on here: " + ", ".join(speedup.name for speedup in applied)
    if missing := plan.missing_packages:
        return f"{missing[0].name} not installed (hover for how)"
    return "nothing to gain here (hover for why)"


def comparison_preset(selected: Preset | None) -> Preset:
    """Without an NVIDIA GPU the estimate is compared with the selected preset's card, or the smallest card's
    when the selected preset is not sized for one (the CPU demo, a user's)."""
    if selected is None or selected.vram_bytes is None:
        return GPU_PRESETS[0]
    return selected
