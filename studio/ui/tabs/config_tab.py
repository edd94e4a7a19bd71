"""Config tab: the model, a preset for the GPU, every knob of the run (help text from the config
dataclasses) and a live GPU memory estimate.

The first screen holds what most runs change (rank, learning rate, batch, length); everything else
sits in the "Advanced" section. The widgets are bound to config fields by (section, name), with their ranges,
steps and choices from the fields' metadata, so showing the draft and writing an edit into it cover every knob
without a hand-written line per field. The draft (studio.core.sessions.draft) is the window's one RunConfig,
which the Dataset tab edits too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QValidator
from PySide6.QtWidgets import (
    QBoxLayout, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QInputDialog,
    QLabel, QLayout, QLineEdit, QPushButton, QScrollArea, QSizePolicy, QSpacerItem, QSpinBox, QVBoxLayout, QWidget,
)
from superqt import QCollapsible, QElidingLabel
from superqt.utils import qdebounced

from studio.core.config.presets import Preset, builtin_presets, load_user_presets, preset_for_gpu, save_user_preset
from studio.core.config.settings import (
    SECTIONS, ConfigError, RunConfig, config_field, copy_config, describe_evaluation, field_bounds, field_help,
    save_config,
)
from studio.core.models.layers import LinearModules, detect_linear_modules
from studio.core.models.source import ModelSourceError, find_model_config
from studio.core.plan.speedups import capabilities_for_card, expected_compute_dtype, plan_fast_path
from studio.core.sessions.config import (
    CPU_AGAINST, GPU_ESTIMATE_TITLE, RAM_ESTIMATE_TITLE, ConfigSession, LayerNames, ModelShapes,
    command_config_path, comparison_preset, context_line_within, describe_fit, describe_layers, fast_path_line,
    fit_card, fit_preset, fit_to_card, memory_estimate, method_data_note, method_fields, method_labels, method_shows,
    positions_warning,
    target_shortcut, train_command,
)
from studio.core.sessions.continuation import continuation_note
from studio.core.sessions.draft import Change, RunDraft
from studio.core.system.gpu import GpuInfo, detect_gpu
from studio.core.system.units import format_bytes
from studio.ui.background import TaskRunner
from studio.ui.widgets import _plot_style as style
from studio.ui.widgets.qt_model_picker import QtModelPicker
from studio.ui.widgets.qt_reward_picker import QtRewardPicker
from studio.ui.widgets.qt_vram_panel import NO_MODEL_TEXT, QtVramPanel

_DETECT = object()
_DETECTION_ERRORS = (ModelSourceError, ValueError, ImportError, OSError)
"""What reading a model's layer names raises for a model it cannot read: the message says why."""
ESTIMATE_DEBOUNCE_MS = 150
_NUMBER_WIDTH = 100
DETECT_DEBOUNCE_MS = 800
DETECTED_LINE_CHARS = 72  # the layer-names label's lines: it fits beside the form's labels in the default window
READING_LAYER_NAMES = ("Reading the model's layer names… The first read after a start imports PyTorch and "
                       "transformers, which can take a minute or more on a busy machine.")

QUANT_MODE_TEXT = {"4bit": "4-bit NF4 (QLoRA)", "8bit": "8-bit", "none": "16-bit (plain LoRA)"}
OPTIM_TEXT = {
    "auto": "auto (paged 8-bit AdamW on a GPU)",
    "paged_adamw_8bit": "paged 8-bit AdamW",
    "adamw_8bit": "8-bit AdamW",
    "adamw_torch": "AdamW (fp32 states)",
    "adamw_torch_fused": "fused AdamW",
    "sgd": "SGD",
}
ATTN_TEXT = {"sdpa": "sdpa (PyTorch)", "eager": "eager", "flash_attention_2": "FlashAttention 2"}
EVAL_TEXT = {"steps": "every N steps", "epoch": "every epoch", "no": "never"}


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


class _QtScientificSpinBox(QDoubleSpinBox):
    """A spin box for small rates: shows 0.0002 or 2e-05 instead of a row of zeros."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt API
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        if re.fullmatch(r"[0-9]*\.?[0-9]*(e-?[0-9]*)?", text.strip().lower()):
            return QValidator.State.Acceptable if _is_float(text) else QValidator.State.Intermediate, text, pos
        return QValidator.State.Invalid, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        # A rate lives on a log scale: each step multiplies by 1.25 rather than adding a constant.
        value = self.value() or 1e-5
        self.setValue(value * (1.25 ** steps))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _QtTextEdit(QLineEdit):
    """A line edit for a text field (a QLineEdit binding is a comma-separated list)."""


class _QtNoteLabel(QLabel):
    """A muted note under a form field: as wide as the field column, wrapped only where the line does
    not fit, and exactly as tall as its lines at that width.

    (A plain word-wrapped QLabel in a QFormLayout is sized by Qt's guess at a narrow width: a column
    of three short lines with a one-line gap around it.)
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._hint_height = -1

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt API
        return False  # the height comes from sizeHint, which follows the width the label was given

    def _height(self) -> int:
        return self.heightForWidth(max(self.width(), super().minimumSizeHint().width()))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # Narrow (the longest word), so a long note never widens the column; Expanding fills it.
        return QSize(super().minimumSizeHint().width(), self._height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return self.sizeHint()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        height = self._height()
        if height != self._hint_height:
            self._hint_height = height
            self.updateGeometry()


@dataclasses.dataclass
class _Binding:
    """One widget showing one config field."""

    section: str
    name: str
    widget: QWidget

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        if isinstance(w, QtRewardPicker):
            return w.rewards()
        if isinstance(w, _QtTextEdit):
            return w.text()
        if isinstance(w, QLineEdit):
            return [part.strip() for part in w.text().split(",") if part.strip()]
        raise TypeError(type(w))

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QComboBox):
            index = w.findData(value)
            if index < 0:  # a value this machine does not offer (e.g. flash_attention_2 not installed)
                w.addItem(f"{value} (not available here)", value)
                index = w.count() - 1
            w.setCurrentIndex(index)
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value)
        elif isinstance(w, QtRewardPicker):
            w.set_rewards(value)
        elif isinstance(w, _QtTextEdit):
            w.setText(value)
        elif isinstance(w, QLineEdit):
            w.setText(", ".join(value))


class _ReflowingRow(QBoxLayout):
    """Two column layouts, side by side (`set_wide(True)`) or the first above the second.

    With `stretch`, each column keeps its boxes at their natural height when it is shorter than the
    one beside it.
    """

    def __init__(self, first: QLayout, second: QLayout, *, stretch: bool = True):
        super().__init__(QBoxLayout.Direction.LeftToRight)
        self._columns = (first, second)
        self._stretches: list[QSpacerItem] = []
        for column in self._columns:
            if stretch:
                spacer = QSpacerItem(0, 0, QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Expanding)
                column.addItem(spacer)
                self._stretches.append(spacer)
            self.addLayout(column, 1)

    def is_wide(self) -> bool:
        return self.direction() == QBoxLayout.Direction.LeftToRight

    def wide_width(self) -> int:
        """The narrowest width that shows both columns side by side without clipping a field."""
        spacing = max(self.spacing(), 0)
        return sum(column.minimumSize().width() for column in self._columns) + spacing

    def set_wide(self, wide: bool) -> bool:
        """Returns whether the arrangement changed."""
        if wide == self.is_wide():
            return False
        self.setDirection(QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom)
        # One above the other, a stretch would open a gap between the columns.
        vertical = QSizePolicy.Policy.Expanding if wide else QSizePolicy.Policy.Minimum
        for spacer in self._stretches:
            spacer.changeSize(0, 0, QSizePolicy.Policy.Minimum, vertical)
        for column in self._columns:
            column.invalidate()
        return True


class QtConfigTab(QWidget):
    """Edits the draft's RunConfig (the window's, or its own): every edit is written into the draft at once, and
    the form follows the draft when another part of the window changes it. `set_config` gives the draft a new
    config, `apply_to` writes the form's values into another one.

    Signals `changed()` whenever the user edits a field (or applies a preset), and
    `estimate_updated(object)` with each new VramEstimate (None when there is none).
    `config_source`, when set, returns the config "Copy as command" and the notes start from instead of the
    draft's.
    """

    changed = Signal()
    preset_chosen = Signal(str)
    estimate_updated = Signal(object)
    modules_detected = Signal(object)

    def __init__(self, parent=None, *, gpu: GpuInfo | None | object = _DETECT, draft: RunDraft | None = None):
        super().__init__(parent)
        self._refresh_gpu = gpu is _DETECT
        self._gpu: GpuInfo | None = detect_gpu() if gpu is _DETECT else gpu  # type: ignore[assignment]
        self.draft = draft if draft is not None else RunDraft()
        self.session = ConfigSession()
        self._bindings: list[_Binding] = []
        self._loading = False
        self._shapes = ModelShapes()
        self._layers = LayerNames()
        self.detected_modules: LinearModules | None = None
        self._detection = TaskRunner(self)
        self.detect_worker = None  # the layer-name read in progress (a BackgroundTask), None when none is
        self._shut_down = False
        self.config_source: Callable[[], RunConfig] | None = None
        self.last_command: str | None = None

        # --- model and presets
        self.model_picker = QtModelPicker()
        self.model_edit = self.model_picker.model_edit
        self.trust_remote_code = self.model_picker.trust_remote_code
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.preset_combo.setToolTip("Fill every knob for a kind of machine; the model and the data stay as they are")
        self.preset_hint = QElidingLabel()
        self.preset_hint.setStyleSheet(f"color: {style.MUTED};")
        self.save_preset_button = QPushButton("Save as preset…")
        self.copy_command_button = QPushButton("Copy as command")
        self.copy_command_button.setToolTip("Save this config to a TOML file and copy the finetune-studio train "
                                            "command that runs it headless")
        self.command_label = QElidingLabel()
        self.fit_button = QPushButton("Fit to this GPU")
        self.fit_button.setToolTip("Choose the fastest settings that fit the card with a margin — max_length for the "
                                   "data's token lengths, gradient checkpointing, the batch split, offloading — and "
                                   "say why; without an NVIDIA GPU, for the selected preset's card (or this computer's "
                                   "RAM with the CPU demo preset)")
        self.context_label = QElidingLabel()  # the longest context the chosen model can train at on this card
        self.context_label.setStyleSheet(f"color: {style.MUTED};")
        self.fit_label = QLabel()  # what the last fit did and why; hidden until then
        self.fit_label.setWordWrap(True)
        self.fit_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.last_fit = None  # the last FitPlan, for tests and the window
        self.token_stats_source: Callable[[], Any] | None = None
        """Returns the Dataset tab's TokenStats (or None), which the fit covers with max_length."""
        self.rows_source: Callable[[], int | None] | None = None
        """Returns the Dataset tab's row count (None until read), for the held-out statement ("5 of 47 rows")."""

        # --- the method and its own settings (only the chosen method's are shown)
        self.method = self._combo("training", "method", method_labels())
        self.method_note = _QtNoteLabel()
        self.method_note.setStyleSheet(f"color: {style.MUTED};")
        self.method_fields = {(section, f.name): self._method_field(section, f) for section, f in method_fields()}
        """(method, setting) → its widget, built from the field's metadata; the chosen method's are shown."""
        self.rewards = next(w for w in self.method_fields.values() if isinstance(w, QtRewardPicker))
        self.reward_pattern = next(w for (section, name), w in self.method_fields.items()
                                   if config_field(section, name).metadata.get("widget") == "reward_pattern")

        # --- first screen
        self.r = self._spin("lora", "r")
        self.lora_alpha = self._spin("lora", "lora_alpha")
        self.lora_dropout = self._double("lora", "lora_dropout")
        self.target_modules = self._list_edit("lora", "target_modules", "all-linear, or e.g. q_proj, v_proj")
        self.attention_only_button = QPushButton("Attention")
        self.attention_mlp_button = QPushButton("Attention + MLP")
        self.all_linear_button = QPushButton("All linear")
        self.detected_label = QLabel()
        # Explicit lines instead of word wrap: a wrapped label in a scroll area gets squeezed when the
        # Advanced section opens. Long names are clipped; the tooltip has them all.
        self.detected_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.detected_label.setStyleSheet(f"color: {style.MUTED};")
        self.quantization_mode = self._combo("quantization", "mode", QUANT_MODE_TEXT)
        self.learning_rate = self._number("training", "learning_rate", _QtScientificSpinBox())
        self.num_train_epochs = self._double("training", "num_train_epochs")
        self.max_steps = self._spin("training", "max_steps")
        self.max_steps.setSpecialValueText("use epochs")
        self.per_device_train_batch_size = self._spin("training", "per_device_train_batch_size")
        self.gradient_accumulation_steps = self._spin("training", "gradient_accumulation_steps")
        self.effective_batch = QLabel()
        self.max_length = self._spin("training", "max_length")
        self.gradient_checkpointing = self._check("training", "gradient_checkpointing", "Gradient checkpointing")
        self.activation_offloading = self._check("training", "activation_offloading", "Offload activations to CPU RAM")
        self.checkpointing_every_n_layers = self._spin("training", "checkpointing_every_n_layers")
        self.embedding_on_cpu = self._check("training", "embedding_on_cpu", "Input embedding in CPU RAM")
        self.fast_path = self._check("training", "fast_path", "Fast path")
        self.fast_path_label = _QtNoteLabel()  # what the fast path gives on this machine, or why a part of it is off
        self.fast_path_label.setStyleSheet(f"color: {style.MUTED};")

        # --- advanced
        self.bnb_4bit_quant_type = self._combo("quantization", "bnb_4bit_quant_type", {"nf4": "nf4", "fp4": "fp4"})
        self.bnb_4bit_use_double_quant = self._check("quantization", "bnb_4bit_use_double_quant", "Double quantisation")
        self.compute_dtype = self._combo("quantization", "compute_dtype", None)
        self.bias = self._combo("lora", "bias", None)
        self.modules_to_save = self._list_edit("lora", "modules_to_save", "none, or e.g. lm_head, embed_tokens")
        self.use_rslora = self._check("lora", "use_rslora", "rsLoRA (alpha / √r)")
        self.use_dora = self._check("lora", "use_dora", "DoRA")
        self.optim = self._combo("training", "optim", OPTIM_TEXT)
        self.lr_scheduler_type = self._combo("training", "lr_scheduler_type", None)
        self.warmup_ratio = self._double("training", "warmup_ratio")
        self.weight_decay = self._double("training", "weight_decay")
        self.max_grad_norm = self._double("training", "max_grad_norm")
        self.packing = self._check("training", "packing", "Pack short examples together")
        self.seed = self._spin("training", "seed")
        attn = dict(ATTN_TEXT)
        if not flash_attention_available():
            attn.pop("flash_attention_2")
        self.attn_implementation = self._combo("model", "attn_implementation", attn)
        self.allow_pickle = self._check("model", "allow_pickle", "Load pickle weights (only files you trust)")
        self.eval_strategy = self._combo("training", "eval_strategy", EVAL_TEXT)
        self.eval_summary = QLabel()  # what actually happens: no eval rows means no evaluation, whatever the schedule
        self.eval_summary.setWordWrap(True)
        self.eval_summary.setStyleSheet(f"color: {style.MUTED};")
        self.eval_steps = self._spin("training", "eval_steps")
        self.early_stopping_patience = self._spin("training", "early_stopping_patience")
        self.early_stopping_patience.setSpecialValueText("off")
        self.score_examples = self._spin("training", "score_examples")
        self.score_examples.setSpecialValueText("off")
        self.score_steps = self._spin("training", "score_steps")
        self.score_steps.setSpecialValueText("at each evaluation")
        self.score_metric = self._combo("training", "score_metric", None)
        self.save_steps = self._spin("training", "save_steps")
        self.save_total_limit = self._spin("training", "save_total_limit")
        self.logging_steps = self._spin("training", "logging_steps")

        self.vram_panel = QtVramPanel()
        self._build_layout()

        self._schedule_estimate = qdebounced(self._update_estimate, timeout=ESTIMATE_DEBOUNCE_MS, parent=self)
        self._schedule_detection = qdebounced(self._start_detection, timeout=DETECT_DEBOUNCE_MS, parent=self)
        self.model_picker.model_changed.connect(self._on_model_changed)
        self.model_picker.trust_changed.connect(lambda _checked: self._on_edit())
        self.model_picker.download_finished.connect(self._on_download_finished)
        self.attention_only_button.clicked.connect(lambda: self.set_target_shortcut("attention"))
        self.attention_mlp_button.clicked.connect(lambda: self.set_target_shortcut("attention+mlp"))
        self.all_linear_button.clicked.connect(lambda: self.set_target_shortcut("all-linear"))
        self.preset_combo.activated.connect(lambda index: self.apply_preset(self.preset_combo.itemData(index)))
        self.preset_combo.currentIndexChanged.connect(self._show_preset_hint)
        self.save_preset_button.clicked.connect(self._ask_preset_name)
        self.copy_command_button.clicked.connect(self.copy_command)
        self.fit_button.clicked.connect(self.fit_to_gpu)

        self.reload_presets()
        self._select_preset(preset_for_gpu(self._gpu).key)
        self._show_detected()
        # The draft's values from the first paint (the documented defaults), not the widgets' minimums.
        self._show_draft()
        unsubscribe = self.draft.subscribe(self._on_draft_changed)
        self.destroyed.connect(lambda *_: unsubscribe())  # the draft may outlive the widget
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # --- widget factories ---------------------------------------------------------------------------
    def _bind(self, section: str, name: str, widget: QWidget) -> Any:
        widget.setToolTip(field_help(section, name))
        self._bindings.append(_Binding(section, name, widget))
        if isinstance(widget, QCheckBox):
            widget.toggled.connect(self._on_edit)
        elif isinstance(widget, QComboBox):
            widget.currentIndexChanged.connect(self._on_edit)
        elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            widget.valueChanged.connect(self._on_edit)
        elif isinstance(widget, QLineEdit):
            widget.textChanged.connect(self._on_edit)
        elif isinstance(widget, QtRewardPicker):
            widget.changed.connect(self._on_edit)
        return widget

    def _number(self, section: str, name: str, box: QSpinBox | QDoubleSpinBox) -> Any:
        """A number box offering the field's range (its metadata's bounds), stepping and showing it as its
        metadata says."""
        meta = config_field(section, name).metadata
        if isinstance(box, QDoubleSpinBox) and "decimals" in meta:
            box.setDecimals(meta["decimals"])  # before the range: Qt rounds the bounds to the decimals
        box.setRange(*field_bounds(section, name))
        if "step" in meta:
            box.setSingleStep(meta["step"])
        box.setMinimumWidth(_NUMBER_WIDTH)
        return self._bind(section, name, box)

    def _spin(self, section: str, name: str) -> QSpinBox:
        return self._number(section, name, QSpinBox())

    def _double(self, section: str, name: str) -> QDoubleSpinBox:
        return self._number(section, name, QDoubleSpinBox())

    def _check(self, section: str, name: str, text: str) -> QCheckBox:
        return self._bind(section, name, QCheckBox(text))

    def _combo(self, section: str, name: str, texts: dict[str, str] | None) -> QComboBox:
        box = QComboBox()
        for value in config_field(section, name).metadata.get("choices", []):
            if texts is None or value in texts:
                box.addItem(texts[value] if texts else value, value)
        return self._bind(section, name, box)

    def _method_field(self, section: str, f: dataclasses.Field) -> QWidget:
        """A method's own setting as the widget its metadata asks for (a number box by its type otherwise)."""
        widget = f.metadata.get("widget")
        if widget == "reward_picker":
            return self._bind(section, f.name, QtRewardPicker())
        if widget == "reward_pattern":
            edit = self._bind(section, f.name, _QtTextEdit())
            edit.setPlaceholderText(f.metadata.get("placeholder", ""))
            return edit
        return self._spin(section, f.name) if f.type in (int, "int") else self._double(section, f.name)

    def _list_edit(self, section: str, name: str, placeholder: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        return self._bind(section, name, edit)

    # --- layout ---------------------------------------------------------------------------------------
    @staticmethod
    def _form(title: str, rows: list[tuple[str | None, QWidget | Any]]) -> QGroupBox:
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        for label, field in rows:
            if label is None:
                form.addRow(field)
            else:
                form.addRow(label, field)
                label_widget = form.labelForField(field)
                tip = field.toolTip() if isinstance(field, QWidget) else ""
                if label_widget is not None and tip:
                    label_widget.setToolTip(tip)
        return box

    def _build_layout(self) -> None:
        model_box = QGroupBox("Base model")
        QVBoxLayout(model_box).addWidget(self.model_picker)

        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset"))
        preset_row.addWidget(self.preset_combo)
        preset_row.addWidget(self.preset_hint, stretch=1)
        preset_row.addWidget(self.save_preset_button)
        preset_row.addWidget(self.copy_command_button)

        shortcuts = QHBoxLayout()
        shortcuts.setContentsMargins(0, 0, 0, 0)
        for button in (self.attention_only_button, self.attention_mlp_button, self.all_linear_button):
            button.setToolTip({
                self.attention_only_button: "Adapt the attention projections only (smallest adapter)",
                self.attention_mlp_button: "Adapt the attention and MLP projections by name",
                self.all_linear_button: "PEFT's all-linear: every linear layer except the output head",
            }[button])
            shortcuts.addWidget(button)
        shortcuts.addStretch(1)
        shortcut_widget = QWidget()
        shortcut_widget.setLayout(shortcuts)

        lora_box = self._form("LoRA adapter", [
            ("Rank (r)", self.r),
            ("Alpha", self.lora_alpha),
            ("Dropout", self.lora_dropout),
            ("Target modules", self.target_modules),
            ("", shortcut_widget),
            (None, self.detected_label),
        ])
        quant_box = self._form("Base weights", [("Stored as", self.quantization_mode)])
        self.method_box = self._form("Method", [
            ("Method", self.method),
            ("", self.method_note),
            *((config_field(*key).metadata["label"], widget) for key, widget in self.method_fields.items()),
        ])
        training_box = self._form("Training", [
            ("Learning rate", self.learning_rate),
            ("Epochs", self.num_train_epochs),
            ("Max steps", self.max_steps),
            ("Batch size", self.per_device_train_batch_size),
            ("Gradient accumulation", self.gradient_accumulation_steps),
            ("Effective batch", self.effective_batch),
            ("Max length (tokens)", self.max_length),
            ("", self.gradient_checkpointing),
            ("", self.activation_offloading),
            ("Checkpoint every n layers", self.checkpointing_every_n_layers),
            ("", self.embedding_on_cpu),
            ("", self.fast_path),
            ("", self.fast_path_label),  # under the box; wraps rather than widen the column
        ])
        # Two columns side by side where they fit, one above the other where they do not (see `_reflow`).
        left = QVBoxLayout()
        left.addWidget(lora_box)
        left.addWidget(quant_box)
        left.addWidget(self.method_box)  # under the shorter column: SFT shows one row, GRPO a few more
        right = QVBoxLayout()
        right.addWidget(training_box)
        columns = _ReflowingRow(left, right)

        advanced_quant = self._form("Quantisation", [
            ("4-bit type", self.bnb_4bit_quant_type),
            ("", self.bnb_4bit_use_double_quant),
            ("Compute dtype", self.compute_dtype),
        ])
        advanced_lora = self._form("Adapter", [
            ("Bias", self.bias),
            ("Modules to save", self.modules_to_save),
            ("", self.use_rslora),
            ("", self.use_dora),
        ])
        advanced_opt = self._form("Optimisation", [
            ("Optimizer", self.optim),
            ("Scheduler", self.lr_scheduler_type),
            ("Warmup ratio", self.warmup_ratio),
            ("Weight decay", self.weight_decay),
            ("Max grad norm", self.max_grad_norm),
            ("Attention", self.attn_implementation),
            ("", self.allow_pickle),
            ("Seed", self.seed),
            ("", self.packing),
        ])
        advanced_eval = self._form("Evaluation and checkpoints", [
            ("Evaluate", self.eval_strategy),
            ("Eval steps", self.eval_steps),
            ("", self.eval_summary),
            ("Early stopping patience", self.early_stopping_patience),
            ("Score held-out examples", self.score_examples),
            ("Score every (steps)", self.score_steps),
            ("Score by", self.score_metric),
            ("Save every (steps)", self.save_steps),
            ("Checkpoints kept", self.save_total_limit),
            ("Log every (steps)", self.logging_steps),
        ])
        advanced_left = QVBoxLayout()
        advanced_left.addWidget(advanced_quant)
        advanced_left.addWidget(advanced_lora, 1)  # as tall as the optimisation box beside it
        advanced_right = QVBoxLayout()
        advanced_right.addWidget(advanced_opt)
        advanced_columns = _ReflowingRow(advanced_left, advanced_right, stretch=False)
        advanced_content = QWidget()
        advanced_layout = QVBoxLayout(advanced_content)
        advanced_layout.setContentsMargins(0, 0, 0, 0)
        advanced_layout.addLayout(advanced_columns)
        advanced_layout.addWidget(advanced_eval)
        self.advanced = QCollapsible("Advanced: quantisation details, adapter options, optimiser, evaluation")
        self.advanced.setCollapsedIcon("▶")
        self.advanced.setExpandedIcon("▼")
        self.advanced.addWidget(advanced_content)
        self.advanced.setDuration(0)
        # Collapsed, the section is only zero height: without this, Tab would walk into its fields and the arrow
        # keys would change a setting nobody can see.
        advanced_content.setEnabled(False)
        self.advanced.toggled.connect(advanced_content.setEnabled)

        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 6, 0)  # a gap before the vertical scroll bar
        inner_layout.addLayout(columns)
        inner_layout.addWidget(self.advanced)
        inner_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # Scrolls sideways only when even one column does not fit (a very narrow window).
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(inner)
        self.scroll_area = scroll
        self._rows = (columns, advanced_columns)
        scroll.installEventFilter(self)
        inner.installEventFilter(self)

        # As wide as its breakdown needs (350 px with the usual font), never squeezed below that.
        self.vram_panel.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        body = QHBoxLayout()
        body.addWidget(scroll, 1)
        body.addWidget(self.vram_panel)

        fit_row = QHBoxLayout()
        fit_row.addWidget(self.fit_button)
        fit_row.addWidget(self.context_label, stretch=1)

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addLayout(preset_row)
        layout.addLayout(fit_row)
        layout.addWidget(self.fit_label)
        self.fit_label.hide()  # shown with the first fit
        layout.addWidget(self.command_label)
        self.command_label.hide()  # shown with the first message
        layout.addLayout(body, 1)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if (watched is self.scroll_area and event.type() == QEvent.Type.Resize) or (
                watched is self.scroll_area.widget() and event.type() == QEvent.Type.LayoutRequest):
            self._reflow()
        return super().eventFilter(watched, event)

    def _reflow(self) -> None:
        """Put each pair of columns side by side when the scroll area is wide enough, else one above the other.

        The width is the one left with a vertical scroll bar shown, so the choice does not flip when
        the bar comes or goes.
        """
        scroll = self.scroll_area
        inner = scroll.widget()
        if inner is None or inner.layout() is None:
            return
        margins = inner.layout().contentsMargins()
        available = (scroll.width() - 2 * scroll.frameWidth() - scroll.verticalScrollBar().sizeHint().width()
                     - margins.left() - margins.right())
        changed = False
        for row in self._rows:
            changed |= row.set_wide(available >= row.wide_width())
        if changed and self.advanced.isExpanded():
            self.advanced.expand(animate=False)  # the section's height follows its new layout

    # --- config in, config out ------------------------------------------------------------------------
    def set_config(self, config: RunConfig) -> None:
        """Give the draft a new config, which the form (and every other view of the draft) then shows; does not
        emit `changed`."""
        self.draft.set_config(config)

    def _on_draft_changed(self, change: Change) -> None:
        if change.source is self:
            return  # the form's own edit: it already shows it
        if change.section == "data":
            self._update_dependent_widgets()  # the form shows no data field, only what the eval split decides
        else:
            self._show_draft()

    def refresh_evaluation(self) -> None:
        """Say again what is held out for eval: the Dataset tab has read (another) row count."""
        self._update_dependent_widgets()

    def _show_draft(self) -> None:
        """Show the draft's config in the form; the guard keeps the widgets' signals from writing it back."""
        config = self.draft.config
        self._loading = True
        try:
            self.model_picker.set_model(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
            for binding in self._bindings:
                binding.set(getattr(getattr(config, binding.section), binding.name))
        finally:
            self._loading = False
        self._update_dependent_widgets()
        self._schedule_estimate()
        self._schedule_detection()

    def apply_to(self, config: RunConfig) -> None:
        """Write the form's values into a config."""
        config.model.name_or_path = self.model_picker.model()
        config.model.trust_remote_code = self.trust_remote_code.isChecked()
        for binding in self._bindings:
            setattr(getattr(config, binding.section), binding.name, binding.get())

    def current_config(self) -> RunConfig:
        """A copy of the draft's config (or of `config_source`'s) with the form's values applied."""
        config = copy_config(self.config_source() if self.config_source is not None else self.draft.config)
        self.apply_to(config)
        return config

    def model_path(self) -> Path | None:
        text = self.model_picker.model()
        return Path(text) if text else None

    def _on_edit(self, *_args: Any) -> None:
        if self._loading:
            return
        self._write_draft()
        self._update_dependent_widgets()
        self._schedule_estimate()
        self.changed.emit()

    def _write_draft(self) -> None:
        """Write the form into the draft: only the fields whose value changed notify the other views."""
        values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        values["model"] = {"name_or_path": self.model_picker.model(),
                           "trust_remote_code": self.trust_remote_code.isChecked()}
        for binding in self._bindings:
            values[binding.section][binding.name] = binding.get()
        for section, fields in values.items():
            if fields:
                self.draft.update(section, source=self, **fields)

    def _on_model_changed(self, _text: str) -> None:
        self._on_edit()
        self._schedule_detection()

    def _update_dependent_widgets(self) -> None:
        effective = self.per_device_train_batch_size.value() * self.gradient_accumulation_steps.value()
        self.effective_batch.setText(f"{effective} examples per optimiser step")
        self.effective_batch.setToolTip("Examples per optimiser step: batch size × gradient accumulation")
        four_bit = self.quantization_mode.currentData() == "4bit"
        self.bnb_4bit_quant_type.setEnabled(four_bit)
        self.bnb_4bit_use_double_quant.setEnabled(four_bit)
        self.num_train_epochs.setEnabled(self.max_steps.value() <= 0)
        strategy = self.eval_strategy.currentData()
        self.eval_steps.setEnabled(strategy == "steps")
        self.early_stopping_patience.setEnabled(strategy != "no")
        config = self.current_config()
        rows = self.rows_source() if self.rows_source is not None else None
        self.eval_summary.setText(describe_evaluation(config.data, config.training, rows))
        self.score_steps.setEnabled(self.score_examples.value() > 0)
        self.score_metric.setEnabled(self.score_examples.value() > 0)
        self._show_method()
        self._show_fast_path()
        self._show_fit_report()

    def _show_method(self) -> None:
        """Only the chosen method's own settings are shown; the regex pattern is asked for with the regex reward."""
        method = self.method.currentData()
        form = self.method_box.layout()
        for (section, _), widget in self.method_fields.items():
            form.setRowVisible(widget, method_shows(method, section))
        # A continued adapter says why its rate and supervised term are what "Continue with…" chose.
        notes = [method_data_note(method), continuation_note(self.current_config())]
        self.method_note.setText("\n".join(note for note in notes if note))
        self.reward_pattern.setEnabled(self.rewards.is_checked("regex"))

    def _show_fast_path(self) -> None:
        config = self.current_config()
        capabilities = capabilities_for_card(self._gpu)
        plan = plan_fast_path(config, capabilities, compute_dtype=expected_compute_dtype(config, capabilities))
        # The line says what is on; the tooltip has every part with its reason.
        self.fast_path_label.setText(fast_path_line(plan))
        self.fast_path_label.setToolTip(plan.summary())

    # --- target modules -------------------------------------------------------------------------------
    def set_target_shortcut(self, which: str) -> None:
        """Fill target modules with attention-only, attention+MLP (by name) or PEFT's all-linear."""
        self.target_modules.setText(", ".join(target_shortcut(which, self.detected_modules)))  # → _on_edit

    def _start_detection(self) -> None:
        model = self.model_picker.model()
        trust = self.trust_remote_code.isChecked()
        if not model:
            self.detected_modules = None
            self._show_detected()
            return
        if (known := self._layers.known(model, trust_remote_code=trust)) is not None:
            self._on_detected(model, known)  # perhaps read at an earlier start: no torch import needed
            return
        if self.detect_worker is not None:
            return  # one at a time; the end handler checks whether the model changed meanwhile
        try:
            find_model_config(model)
        except ModelSourceError as error:
            self.detected_modules = None
            self._set_detected_text(f"Layer names unknown: {error}")
            return
        self._set_detected_text(READING_LAYER_NAMES)
        self.detect_worker = self._detection.start(
            lambda state: detect_linear_modules(model, trust_remote_code=trust),
            on_result=lambda modules: self._on_detected(model, modules, trust=trust),
            on_error=self._on_detection_failed, on_done=self._on_detection_ended, expected_errors=_DETECTION_ERRORS,
            name="read layer names")

    def _on_detection_failed(self, error: BaseException) -> None:
        reason = str(error) if isinstance(error, _DETECTION_ERRORS) else f"{type(error).__name__}: {error}"
        self._set_detected_text(f"Layer names unknown: {reason}")

    def _on_detection_ended(self) -> None:
        self.detect_worker = None
        if not self._shut_down and (self.model_picker.model(), self.trust_remote_code.isChecked()) not in self._layers:
            self._schedule_detection()  # the model changed while the last one was read

    def _on_detected(self, model: str, modules: LinearModules, *, trust: bool | None = None) -> None:
        if trust is not None:
            self._layers.remember(model, modules, trust_remote_code=trust)
        if model != self.model_picker.model():
            return
        self.detected_modules = modules
        self._show_detected()
        self.modules_detected.emit(modules)

    def _show_detected(self) -> None:
        self._set_detected_text(describe_layers(self.detected_modules))

    def _set_detected_text(self, text: str) -> None:
        shown = text
        if "\n" not in text:  # an error or a notice: explicit lines (see the label), cut between words
            shown = textwrap.fill(text, DETECTED_LINE_CHARS, break_long_words=False, break_on_hyphens=False)
        self.detected_label.setText(shown)
        self.detected_label.setToolTip(text)

    def _on_download_finished(self, _folder: str) -> None:
        self._shapes.forget(self.model_picker.model())
        self._schedule_estimate()
        self._schedule_detection()

    # --- presets --------------------------------------------------------------------------------------
    def reload_presets(self) -> list[str]:
        """Fill the preset list (built-in, then the user's); returns messages for unreadable files."""
        user, problems = load_user_presets()
        self._presets: dict[str, Preset] = {}
        current = self.preset_combo.currentData()
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        for preset in builtin_presets():
            self._presets[preset.key] = preset
            self.preset_combo.addItem(preset.label, preset.key)
        for preset in user:
            key = f"user:{preset.key}"
            self._presets[key] = preset
            self.preset_combo.addItem(f"{preset.label} (yours)", key)
        self.preset_combo.blockSignals(False)
        if current is not None:
            self._select_preset(current)
        if problems:
            self._set_message("; ".join(problems), error=True)
        return problems

    def _select_preset(self, key: str) -> None:
        index = self.preset_combo.findData(key)
        if index >= 0:
            self.preset_combo.setCurrentIndex(index)
            self.session.preset_key = key
        self._show_preset_hint()

    def show_preset(self, key: str) -> bool:
        """Show `key` as the chosen preset without applying it (the window restores the last choice); False for a
        preset that no longer exists."""
        if self.preset_combo.findData(key) < 0:
            return False
        self._select_preset(key)
        return True

    def _show_preset_edited(self, shape) -> None:
        """The preset box says "edited" once a field differs from the chosen preset."""
        preset, index = self.selected_preset(), self.preset_combo.currentIndex()
        if preset is None or index < 0:
            return
        config = self.draft.config
        edited = shape is not None and self.session.differs_from_preset(preset, config, shape)
        label = preset.label if preset.builtin else f"{preset.label} (yours)"
        self.preset_combo.setItemText(index, f"{label} — edited" if edited else label)

    def _show_preset_hint(self, *_args: Any) -> None:
        preset = self.selected_preset()
        if preset is None:
            self.preset_hint.setText("")
            return
        tip = preset.description
        if preset.suggested_model:
            tip += f" Sized with {preset.suggested_model}, which it suggests when no model is chosen."
        self.preset_hint.setText(preset.description)
        self.preset_hint.setToolTip(tip)
        if not self._loading:
            self._schedule_estimate()

    def selected_preset(self) -> Preset | None:
        return self._presets.get(self.preset_combo.currentData())

    def apply_preset(self, key: str) -> None:
        """Set every knob from a preset (the model and the data stay); emits `changed`."""
        preset = self._presets[key]
        self._select_preset(key)
        config = self.current_config()
        if not config.model.name_or_path and preset.suggested_model:
            config.model.name_or_path = preset.suggested_model
        # The planner sets the preset's memory levers for the model's shape, where it is known.
        config = fit_preset(preset, config, self._shapes.get(config.model.name_or_path)[0])
        self.set_config(config)
        self._schedule_estimate()  # the "edited" mark goes with it
        self.preset_chosen.emit(key)
        self.changed.emit()

    def save_preset(self, name: str) -> Path:
        """Save the current knobs as a user preset and select it."""
        path = save_user_preset(name, self.current_config())
        self.reload_presets()
        self._select_preset(f"user:{path.stem}")
        self._set_message(f"Preset saved: {path}")
        return path

    def _ask_preset_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset", "Preset name:")
        if ok and name.strip():
            try:
                self.save_preset(name)
            except (ConfigError, OSError) as error:
                self._set_message(f"Could not save the preset: {error}", error=True)

    # --- copy as command ------------------------------------------------------------------------------
    def command_config_path(self, config: RunConfig) -> Path:
        """Where "Copy as command" saves the config: one file per run name or model."""
        return command_config_path(config)

    def copy_command(self) -> str | None:
        """Save the config to a TOML file and copy `finetune-studio train FILE` to the clipboard."""
        config = self.current_config()
        try:
            config.validate()
        except ConfigError as error:
            self._set_message(f"Not ready to train yet: {error}", error=True)
            return None
        path = self.command_config_path(config)
        try:
            save_config(config, path)
        except OSError as error:
            self._set_message(f"Could not save {path}: {error}", error=True)
            return None
        command = train_command(path)
        QGuiApplication.clipboard().setText(command)
        self.last_command = command
        self._set_message(f"Copied to the clipboard: {command}")
        return command

    def _set_message(self, text: str, *, error: bool = False) -> None:
        self.command_label.setStyleSheet(f"color: {style.RED};" if error else "")
        self.command_label.setText(text)
        self.command_label.setToolTip(text)
        self.command_label.setVisible(bool(text))

    # --- the estimate ---------------------------------------------------------------------------------
    def memory_limit(self) -> tuple[int, str]:
        """The free memory to compare with, and a phrase saying whose it is."""
        if self._gpu is not None:
            if self._refresh_gpu:
                self._gpu = detect_gpu(self._gpu.index) or self._gpu
            return self._gpu.free_bytes, f"free on {self._gpu.name} ({format_bytes(self._gpu.total_bytes, style='memory')})"
        preset = comparison_preset(self.selected_preset())
        return preset.vram_bytes or 0, f"no NVIDIA GPU detected, so compared with the {preset.card} preset's card"

    def _update_estimate(self) -> None:
        config = self.current_config()
        model = config.model.name_or_path
        if not model:
            self.vram_panel.set_unavailable(NO_MODEL_TEXT)
            self.context_label.setText("")
            self.estimate_updated.emit(None)
            return
        shape, source = self._shapes.get(model)
        if shape is None:
            self.vram_panel.set_unavailable(f"No estimate: {source}")
            self.context_label.setText("")
            self.estimate_updated.emit(None)
            return
        self._show_preset_edited(shape)
        card, positions = self._fit_card(), self._shapes.positions(model)
        estimate = memory_estimate(shape, config, card)
        if (warning := positions_warning(config, positions)) is not None:
            estimate.notes.insert(0, warning)
        limit, against = (card.free_bytes, CPU_AGAINST) if card.device == "cpu" else self.memory_limit()
        self.vram_panel.setTitle(RAM_ESTIMATE_TITLE if card.device == "cpu" else GPU_ESTIMATE_TITLE)
        self.vram_panel.set_estimate(estimate, limit_bytes=limit, against=against, source=source)
        self.context_label.setText(context_line_within(shape, config, card, positions))
        self.context_label.setToolTip(self.context_label.text())
        self.estimate_updated.emit(estimate)

    # --- fit to this GPU ------------------------------------------------------------------------------
    def _fit_card(self):
        if self._gpu is not None and self._refresh_gpu:
            self._gpu = detect_gpu(self._gpu.index) or self._gpu
        return fit_card(self._gpu, self.selected_preset())

    def fit_to_gpu(self) -> None:
        """Apply the planner's fastest settings that fit (written through the draft), and show the estimate before
        and after and why; where nothing fits, change nothing and say what would."""
        config = self.current_config()
        shape, source = self._shapes.get(config.model.name_or_path) if config.model.name_or_path else (None, "")
        if shape is None:
            self._show_fit(f"Cannot fit: {source or 'choose a model first'}")
            return
        stats = self.token_stats_source() if self.token_stats_source is not None else None
        plan = fit_to_card(shape, config, self._fit_card(), stats)
        self.last_fit = plan
        if plan.fits:
            for section in ("quantization", "lora", "training"):  # the planner may set LoRA dropout 0 for length
                chosen = getattr(plan.config, section)
                self.draft.update(section, **{f.name: getattr(chosen, f.name) for f in dataclasses.fields(chosen)})
            self.changed.emit()
        self._show_fit(describe_fit(plan, config))

    def _show_fit(self, text: str) -> None:
        self.session.record_fit(text, self.draft.config)  # about the fields as they are now, after the fit
        self._show_fit_report()

    def _show_fit_report(self) -> None:
        text = self.session.fit_report(self.draft.config)
        self.fit_label.setText(text)
        self.fit_label.setVisible(bool(text))

    def shutdown(self) -> None:
        """Stop background work (a download is cancelled; what it fetched stays in the cache)."""
        self._shut_down = True
        self.model_picker.shutdown()
        self._detection.shutdown(60_000)
