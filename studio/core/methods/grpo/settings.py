"""GRPO's settings half: Group Relative Policy Optimisation, the model's own replies scored by rewards."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from studio.core.data.shape import detect_format
from studio.core.methods.pairs import record_keys, shown_keys
from studio.core.methods.spec import DataShape, LivePlot, MethodSpec, SettingsProblem


@dataclass(slots=True)
class GrpoSettings:
    """GRPO's own settings, read when training.method = grpo: the replies sampled per prompt and the rewards
    that score them."""

    num_generations: int = field(
        default=4,
        metadata={"label": "Replies per prompt",
                  "help": "Replies sampled per prompt; each is rewarded against the others of its group. Batch size "
                          "× gradient accumulation must be a multiple of it.", "min": 2, "max": 256},
    )
    max_completion_length: int = field(
        default=128,
        metadata={"label": "Max reply length",
                  "help": "The longest reply generated, in tokens.", "min": 1, "max": 1_048_576, "step": 64},
    )
    generation_temperature: float = field(
        default=1.0,
        metadata={"label": "Sampling temperature",
                  "help": "The sampling temperature of the replies each prompt's group is scored on. 1.0 is TRL's "
                          "default; a small model samples noise at 1.0 and every reply of a group then scores the "
                          "same, which teaches nothing, so 0.5–0.8 suits small models.",
                  "min": 0.05, "max": 2.0, "step": 0.05, "decimals": 2},
    )
    rewards: list[str] = field(
        default_factory=lambda: ["tool_call=1.0"],
        metadata={"label": "Rewards", "widget": "reward_picker",
                  "help": "The reward functions as metric=weight pairs, from the Evaluate tab's metrics (exact, "
                          "normalised, normalised_tr, contains, regex, tool_call, chrf), each scoring a generated "
                          "reply against the prompt's expected reply from 0 to 1 (tool_call with partial credit: a "
                          "call, the right function, valid JSON, each argument right). The reward is the weighted "
                          "sum."},
    )
    reward_pattern: str = field(
        default="",
        metadata={"label": "Regex pattern", "widget": "reward_pattern", "placeholder": r"e.g. <tool_code>\w+\(",
                  "help": "The regular expression of the regex reward (found in the reply = 1)."},
    )
    length_penalty: float = field(
        default=0.0,
        metadata={"label": "Length penalty",
                  "help": "Subtracted from the reward in proportion to the reply's length: a reply of "
                          "max_completion_length tokens loses this much. 0 = no penalty.",
                  "min": 0.0, "max": 100.0, "step": 0.01, "decimals": 3},
    )
    kl_coefficient: float = field(
        default=0.0,
        metadata={"label": "KL coefficient",
                  "help": "The weight of the KL penalty that keeps the model near the base (TRL's beta). 0 = none, and "
                          "no reference pass is computed (faster); above 0 the KL is also plotted. 0.001–0.04 is "
                          "typical.", "min": 0.0, "max": 10.0, "step": 0.001, "decimals": 4},
    )


def parse_rewards(entries: Sequence[str]) -> list[tuple[str, float]]:
    """`["tool_call=1.0", "exact"]` → [("tool_call", 1.0), ("exact", 1.0)]; ValueError names a bad entry. The
    metric names are checked where the rewards are built (grpo.trainer): metrics sit above the settings."""
    parsed = []
    for entry in entries:
        name, _, weight = str(entry).partition("=")
        if not name.strip():
            raise ValueError(f"'{entry}' is not metric=weight (e.g. tool_call=1.0)")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"'{entry}': the weight {weight.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"'{entry}': the weight must be a finite number")
        parsed.append((name.strip(), value))
    return parsed


def validate(settings: GrpoSettings, training: Any) -> None:
    try:
        rewards = parse_rewards(settings.rewards)
    except ValueError as error:
        raise SettingsProblem("grpo.rewards", settings.rewards, str(error)) from None
    if not rewards and settings.length_penalty <= 0:
        raise SettingsProblem("grpo.rewards", settings.rewards, "grpo needs at least one reward (e.g. tool_call=1.0)")
    per_step = training.per_device_train_batch_size * training.gradient_accumulation_steps
    if per_step % settings.num_generations:
        raise SettingsProblem("grpo.num_generations", settings.num_generations,
                              f"batch size × gradient accumulation ({per_step}) must be a multiple of it: each "
                              "prompt's replies are compared within one step")


def detect_prompt(record: Any) -> tuple[str, str]:
    """A prompt, with its expected reply when there is one; an SFT record's last reply is the expected one and what
    comes before it the prompt."""
    keys = record_keys(record)
    if "prompt" in keys:
        return "prompt_only", "key 'prompt' (the model writes the replies; 'completion', when present, is the " \
                              "expected one)"
    try:
        found, why = detect_format(record)
    except ValueError:
        raise ValueError(f"grpo needs a 'prompt' (or a conversation to take it from) (keys: {shown_keys(keys)})") \
            from None
    if found == "text":
        raise ValueError("grpo needs a prompt: plain text has none")
    return found, f"{why}: its last reply is the expected one"


METHOD = MethodSpec(
    name="grpo",
    title="GRPO",
    label="GRPO (rewarded generations)",
    help="grpo (Group Relative Policy Optimisation: the model writes several replies per prompt and learns from their "
         "rewards, see [grpo] rewards; reads prompts, with the expected reply the rewards compare against)",
    schema_1_keys=tuple((f.name, f.name) for f in dataclasses.fields(GrpoSettings)),  # v1 had the same names
    settings=GrpoSettings,
    data=DataShape(note="Reads prompts with their expected reply; the model writes replies, the rewards below score "
                        "them.", columns=("Prompt", "Expected reply"), kind="prompt", detect=detect_prompt),
    plots=(
        LivePlot("Reward per function", ("rewards/",), (), "reward"),
        LivePlot("Reward", ("reward", "reward_std"), ("mean", "spread (std)"), "reward"),
        LivePlot("Reply length", ("completions/mean_length",), ("mean tokens",), "tokens"),
        LivePlot("KL from the base", ("kl",), ("KL",), "nats"),
    ),
    checkpoints_every_layer=True,
    reference="the KL reference (when grpo.kl_coefficient > 0) is a frozen copy of that adapter",
    continue_label="GRPO (rewards from the metrics)",
    continue_note="Continuing an adapter: GRPO at the SFT run's learning rate unlearns what SFT taught (measured: 7 of "
                  "10 right tool calls became 0 of 10). 'Continue with…' sets a tenth of that rate (8 of 10).",
    continued_rate_share=0.1,
    validate=validate,
    generated_tokens=lambda settings: settings.max_completion_length,
)
