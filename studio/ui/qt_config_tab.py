"""Config tab: the model and the knobs that matter most, each with the help text from the config dataclasses."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
    QVBoxLayout, QWidget,
)

from studio.core.config import RunConfig, field_help


def _spin(minimum: int, maximum: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    return box


def _double(minimum: float, maximum: float, decimals: int, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(minimum, maximum)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    return box


class QtConfigTab(QWidget):
    """Edits a RunConfig in place: `set_config` fills the form, `apply_to` writes it back.

    Signals `changed()` whenever the user edits a field.
    """

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("a local model folder, or a Hub id such as meta-llama/Llama-3.2-3B-Instruct")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, stretch=1)
        model_row.addWidget(browse)

        self.r = _spin(1, 1024)
        self.lora_alpha = _spin(1, 4096)
        self.lora_dropout = _double(0.0, 0.9, 2, 0.05)
        self.target_modules = QLineEdit()
        self.target_modules.setPlaceholderText("all-linear, or e.g. q_proj, k_proj, v_proj, o_proj")

        self.learning_rate = _double(0.0, 1.0, 6, 1e-5)
        self.num_train_epochs = _double(0.0, 1000.0, 2, 1.0)
        self.max_steps = _spin(-1, 10_000_000)
        self.max_steps.setSpecialValueText("use epochs")
        self.per_device_train_batch_size = _spin(1, 1024)
        self.gradient_accumulation_steps = _spin(1, 1024)
        self.max_length = _spin(8, 1_048_576)
        self.effective_batch = QLabel()

        model_box = QGroupBox("Model")
        model_form = QFormLayout(model_box)
        model_form.addRow("Base model", model_row)
        self._tip(model_form.labelForField(model_row), self.model_edit, "model", "name_or_path")

        lora_box = QGroupBox("LoRA adapter")
        lora_form = QFormLayout(lora_box)
        training_box = QGroupBox("Training")
        training_form = QFormLayout(training_box)
        for form, label, widget, section, name in (
            (lora_form, "Rank (r)", self.r, "lora", "r"),
            (lora_form, "Alpha", self.lora_alpha, "lora", "lora_alpha"),
            (lora_form, "Dropout", self.lora_dropout, "lora", "lora_dropout"),
            (lora_form, "Target modules", self.target_modules, "lora", "target_modules"),
            (training_form, "Learning rate", self.learning_rate, "training", "learning_rate"),
            (training_form, "Epochs", self.num_train_epochs, "training", "num_train_epochs"),
            (training_form, "Max steps", self.max_steps, "training", "max_steps"),
            (training_form, "Batch size", self.per_device_train_batch_size, "training", "per_device_train_batch_size"),
            (training_form, "Gradient accumulation", self.gradient_accumulation_steps, "training",
             "gradient_accumulation_steps"),
            (training_form, "Max length (tokens)", self.max_length, "training", "max_length"),
        ):
            form.addRow(label, widget)
            self._tip(form.labelForField(widget), widget, section, name)
        training_form.addRow("Effective batch", self.effective_batch)

        for spin in (self.r, self.lora_alpha, self.max_steps, self.per_device_train_batch_size,
                     self.gradient_accumulation_steps, self.max_length):
            spin.valueChanged.connect(self._on_edit)
        for spin in (self.lora_dropout, self.learning_rate, self.num_train_epochs):
            spin.valueChanged.connect(self._on_edit)
        for edit in (self.model_edit, self.target_modules):
            edit.textEdited.connect(self._on_edit)

        columns = QHBoxLayout()
        columns.addWidget(lora_box)
        columns.addWidget(training_box)
        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addLayout(columns)
        layout.addStretch(1)
        self._update_effective_batch()

    @staticmethod
    def _tip(label: QWidget | None, widget: QWidget, section: str, name: str) -> None:
        text = field_help(section, name)
        widget.setToolTip(text)
        if label is not None:
            label.setToolTip(text)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.model_edit.setText(folder)
            self._on_edit()

    def _on_edit(self) -> None:
        self._update_effective_batch()
        self.changed.emit()

    def _update_effective_batch(self) -> None:
        effective = self.per_device_train_batch_size.value() * self.gradient_accumulation_steps.value()
        self.effective_batch.setText(f"{effective} examples per optimiser step")

    def set_config(self, config: RunConfig) -> None:
        """Show a config in the form (without emitting `changed`)."""
        widgets = (self.model_edit, self.r, self.lora_alpha, self.lora_dropout, self.target_modules,
                   self.learning_rate, self.num_train_epochs, self.max_steps, self.per_device_train_batch_size,
                   self.gradient_accumulation_steps, self.max_length)
        for widget in widgets:
            widget.blockSignals(True)
        try:
            self.model_edit.setText(config.model.name_or_path)
            self.r.setValue(config.lora.r)
            self.lora_alpha.setValue(config.lora.lora_alpha)
            self.lora_dropout.setValue(config.lora.lora_dropout)
            self.target_modules.setText(", ".join(config.lora.target_modules))
            t = config.training
            self.learning_rate.setValue(t.learning_rate)
            self.num_train_epochs.setValue(t.num_train_epochs)
            self.max_steps.setValue(t.max_steps)
            self.per_device_train_batch_size.setValue(t.per_device_train_batch_size)
            self.gradient_accumulation_steps.setValue(t.gradient_accumulation_steps)
            self.max_length.setValue(t.max_length)
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self._update_effective_batch()

    def apply_to(self, config: RunConfig) -> None:
        """Write the form's values into a config."""
        config.model.name_or_path = self.model_edit.text().strip()
        config.lora.r = self.r.value()
        config.lora.lora_alpha = self.lora_alpha.value()
        config.lora.lora_dropout = self.lora_dropout.value()
        config.lora.target_modules = [m.strip() for m in self.target_modules.text().split(",") if m.strip()]
        t = config.training
        t.learning_rate = self.learning_rate.value()
        t.num_train_epochs = self.num_train_epochs.value()
        t.max_steps = self.max_steps.value()
        t.per_device_train_batch_size = self.per_device_train_batch_size.value()
        t.gradient_accumulation_steps = self.gradient_accumulation_steps.value()
        t.max_length = self.max_length.value()

    def model_path(self) -> Path | None:
        text = self.model_edit.text().strip()
        return Path(text) if text else None
