"""What a training method states about itself: the parts every method's settings half fills in.

Plain data, no torch: `config.settings` and everything above it read these through `methods.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class SettingsProblem(ValueError):
    """A method setting a user can fix: `config.settings` turns it into its ConfigError (which sits above)."""

    def __init__(self, key: str, value: Any, reason: str):
        super().__init__(f"{key} = {value!r}: {reason}")
        self.key, self.value, self.reason = key, value, reason


@dataclass(frozen=True)
class LivePlot:
    """One live plot of a method: its title, the logged metric keys it draws (a key ending in '/' takes every
    key under it that ends in /mean), their curve labels and the unit of its axis."""

    title: str
    keys: tuple[str, ...]
    labels: tuple[str, ...] = ()
    unit: str = ""

    def matches(self, key: str) -> bool:
        return any(key.startswith(k) and key.endswith("/mean") if k.endswith("/") else key == k for k in self.keys)

    def label(self, key: str) -> str:
        for k, text in zip(self.keys, self.labels):
            if key == k:
                return text
        for k in self.keys:
            if k.endswith("/") and key.startswith(k) and key.endswith("/mean"):
                return key[len(k):-len("/mean")]  # GRPO's rewards/<function>/mean
        return key


@dataclass(frozen=True)
class DataShape:
    """The records a method trains on and how its file is read."""

    note: str
    """The one line under the method choice: what data the method reads."""
    columns: tuple[str, ...]
    """The Dataset tab's columns after the source line or row."""
    kind: str
    """What one example is, for the row preview: conversation, pair, reply or prompt."""
    needs: str = ""
    """What a file must hold, in a few words, when a chat file will not do ("" when one does)."""
    detect: Callable[[Any], tuple[str, str]] | None = None
    """record → (the shape it is read as, the evidence); ValueError says what the method needs. None: the method
    reads SFT data (core.data.loading), not records of its own."""
    unpair: bool = False
    """A chosen/rejected pair is split into a desirable and an undesirable reply (TRL's unpair_preference_dataset)."""
    needs_both_labels: bool = False
    """The data must hold desirable and undesirable replies both."""


def no_check(settings: Any, training: Any) -> None:
    """A method whose settings need no check beyond their fields' ranges."""


def no_generation(settings: Any) -> int:
    return 0


@dataclass(frozen=True)
class MethodSpec:
    """A training method's settings half: everything about it that the studio knows without TRL."""

    name: str
    """training.method's value and the method's TOML section."""
    title: str
    """Its short name on screen (DPO)."""
    label: str
    """Its entry in the Config tab's method list (DPO (preference pairs))."""
    help: str
    """Its sentence in training.method's help."""
    settings: type
    """Its settings dataclass ([name] in the TOML); field metadata = help, choices, ranges."""
    data: DataShape
    plots: tuple[LivePlot, ...] = ()
    """The live plots of its logged metrics (SFT's loss and learning rate are every run's)."""
    checkpoints_every_layer: bool = False
    """TRL's trainer turns checkpointing off and on again around its reference or generation passes, which
    checkpoints every layer again, whatever training.checkpointing_every_n_layers says."""
    reference: str = ""
    """What a continued adapter becomes for this method (its frozen reference), for the run's log."""
    continue_label: str = ""
    """Its entry in the Runs view's 'Continue with…' menu."""
    continue_note: str = ""
    """Why 'Continue with…' sets what it sets, shown on the Config tab."""
    continued_rate_share: float = 1.0
    """The share of an SFT run's learning rate it continues that run's adapter at."""
    continue_settings: Callable[[Any], None] = field(default=lambda settings: None)
    """What 'Continue with…' sets in its settings (DPO keeps a supervised term)."""
    validate: Callable[[Any, Any], None] = no_check
    """(its settings, the [training] settings) → None, or SettingsProblem naming the key."""
    generated_tokens: Callable[[Any], int] = no_generation
    """The longest reply it generates per prompt while training (its KV cache in the memory estimate)."""
    schema_1_keys: tuple[tuple[str, str], ...] = ()
    """(its [training] key in a version-1 config, its field here): how `config.settings` reads an older file."""
    scores_while_training: bool = False
    """Its data has expected replies to score while training (training.score_examples)."""

    @property
    def reads_own_records(self) -> bool:
        return self.data.detect is not None
