"""GRPO's reward functions: a checkbox per evaluation metric, each with its weight ([grpo] rewards)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QGridLayout, QWidget

from studio.core.sessions.config import reward_choices, reward_entries, reward_weights

__all__ = ["QtRewardPicker"]

WEIGHT_RANGE = (0.01, 100.0)


class QtRewardPicker(QWidget):
    """Shows and edits [grpo] rewards as metric=weight entries; signals `changed()` on every user edit."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.checks: dict[str, QCheckBox] = {}
        self.weights: dict[str, QDoubleSpinBox] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(2)
        for row, info in enumerate(reward_choices()):
            check = QCheckBox(info.title)
            check.setToolTip(f"{info.name}: {info.description}")
            weight = QDoubleSpinBox()
            weight.setRange(*WEIGHT_RANGE)
            weight.setDecimals(2)
            weight.setSingleStep(0.1)
            weight.setValue(1.0)
            weight.setPrefix("× ")
            weight.setToolTip(f"The weight of the {info.name} reward in the sum")
            weight.setEnabled(False)
            check.toggled.connect(weight.setEnabled)
            check.toggled.connect(self._on_edit)
            weight.valueChanged.connect(self._on_edit)
            grid.addWidget(check, row, 0)
            grid.addWidget(weight, row, 1)
            self.checks[info.name], self.weights[info.name] = check, weight
        grid.setColumnStretch(2, 1)
        self._loading = False
        self._shown: list[str] = []

    def rewards(self) -> list[str]:
        """The checked metrics as [grpo] rewards entries."""
        return reward_entries({name: self.weights[name].value() for name, check in self.checks.items()
                               if check.isChecked()}, shown=self._shown)

    def set_rewards(self, entries: list[str]) -> None:
        """Show [grpo] rewards (does not signal `changed`)."""
        chosen = reward_weights(list(entries))
        self._shown = list(entries)
        self._loading = True
        try:
            for name, check in self.checks.items():
                check.setChecked(name in chosen)
                if name in chosen:
                    self.weights[name].setValue(chosen[name])
        finally:
            self._loading = False

    def _on_edit(self, *_args) -> None:
        if not self._loading:
            self.changed.emit()
