"""Config tab: the model, a preset for the GPU, every knob of the run (help text from the config
dataclasses) and a live GPU memory estimate.

The first screen holds what most runs change (rank, learning rate, batch, length); everything else
sits in the "Advanced" section. The form is built from `sessions.config_form` (which field in which box, under
which label) and the fields' metadata (ranges, steps, choices); one binder shows each field and writes each edit
into the draft. Everything else the tab shows (the preset and whether it was edited, the estimate, the layer names,
the fit's report, the notes) is `ConfigSession`'s state: the tab re-renders when the session says it changed and
never reads its widgets back to rebuild a config.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QInputDialog, QLabel, QPushButton, QScrollArea,
    QSizePolicy, QVBoxLayout, QWidget,
)
from superqt import QCollapsible, QElidingLabel
from superqt.utils import qdebounced, signals_blocked

from studio.core.sessions.config import (
    DETECT, LAYER_READ_ERRORS, ConfigChange, ConfigSession, command_config_path, method_labels, read_layer_names,
)
from studio.core.sessions.config_form import (
    ADVANCED_BELOW, ADVANCED_COLUMNS, FIRST_COLUMNS, FormBox, FormField, form_values,
)
from studio.core.sessions.draft import RunDraft
from studio.ui.background import TaskRunner
from studio.ui.widgets import _plot_style as style
from studio.ui.widgets.qt_form_fields import QtFieldBinder, QtNoteLabel, QtReflowingRow, QtVerticalScrollArea
from studio.ui.widgets.qt_model_picker import QtModelPicker
from studio.ui.widgets.qt_vram_panel import NO_MODEL_TEXT, QtVramPanel

ESTIMATE_DEBOUNCE_MS = 150
DETECT_DEBOUNCE_MS = 800
SHORTCUTS = (("attention", "Attention", "Adapt the attention projections only (smallest adapter)"),
             ("attention+mlp", "Attention + MLP", "Adapt the attention and MLP projections by name"),
             ("all-linear", "All linear", "PEFT's all-linear: every linear layer except the output head"))


class _SessionAttribute:
    """A tab attribute that is the session's (the window sets `token_stats_source` on the tab)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, tab: Any, owner: type | None = None) -> Any:
        return getattr(tab.session, self.name)

    def __set__(self, tab: Any, value: Any) -> None:
        setattr(tab.session, self.name, value)


class QtConfigTab(QWidget):
    """Shows and edits the draft's RunConfig (the window's, or its own) through a `ConfigSession`: every edit is
    written into the draft at once, and the form follows the draft when another part of the window changes it.

    Signals `changed()` whenever the user edits a field (or applies a preset or a fit),
    `estimate_updated(object)` with each new VramEstimate (None when there is none), `preset_chosen(key)` and
    `modules_detected(LinearModules)`.
    """

    changed = Signal()
    preset_chosen = Signal(str)
    estimate_updated = Signal(object)
    modules_detected = Signal(object)

    config_source = _SessionAttribute()
    token_stats_source = _SessionAttribute()
    rows_source = _SessionAttribute()
    last_fit = _SessionAttribute()

    def __init__(self, parent=None, *, gpu: Any = DETECT, draft: RunDraft | None = None,
                 session: ConfigSession | None = None):
        super().__init__(parent)
        self.session = session if session is not None else ConfigSession(draft, gpu=gpu)
        self.draft = self.session.draft
        self._detection = TaskRunner(self)
        self.detect_worker = None  # the layer-name read in progress (a BackgroundTask), None when none is
        self._shut_down = False
        self.last_command: str | None = None

        self.model_picker = QtModelPicker()
        self.model_edit = self.model_picker.model_edit
        self.trust_remote_code = self.model_picker.trust_remote_code
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.preset_combo.setToolTip("Fill every knob for a kind of machine; the model and the data stay as they are")
        self.preset_hint = QElidingLabel()
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
        self.fit_label = QLabel()  # what the last fit did and why; hidden while there is none
        self.fit_label.setWordWrap(True)
        self.fit_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.method_note = QtNoteLabel()
        self.fast_path_label = QtNoteLabel()  # what the fast path gives on this machine, or why a part of it is off
        self.effective_batch = QLabel()
        self.effective_batch.setToolTip("Examples per optimiser step: batch size × gradient accumulation")
        self.eval_summary = QLabel()  # what actually happens: no eval rows means no evaluation, whatever the schedule
        self.eval_summary.setWordWrap(True)
        self.detected_label = QLabel()
        # Explicit lines instead of word wrap: a wrapped label in a scroll area gets squeezed when the
        # Advanced section opens. Long names are clipped; the tooltip has them all.
        self.detected_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for label in (self.preset_hint, self.context_label, self.method_note, self.fast_path_label, self.eval_summary,
                      self.detected_label):
            label.setStyleSheet(f"color: {style.MUTED};")
        self.shortcut_buttons: dict[str, QPushButton] = {}
        shortcuts = QWidget()
        row = QHBoxLayout(shortcuts)
        row.setContentsMargins(0, 0, 0, 0)
        for which, text, tip in SHORTCUTS:
            button = self.shortcut_buttons[which] = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, which=which: self.set_target_shortcut(which))
            row.addWidget(button)
        row.addStretch(1)
        self.attention_only_button, self.attention_mlp_button, self.all_linear_button = self.shortcut_buttons.values()
        self._notes = {"shortcuts": shortcuts, "detected": self.detected_label, "method_note": self.method_note,
                       "effective_batch": self.effective_batch, "fast_path_note": self.fast_path_label,
                       "eval_summary": self.eval_summary}

        # Every config field: one widget, made from the field and bound by one binder (tab.r, tab.max_length...).
        self.binder = QtFieldBinder(self)
        self._form_of: dict[tuple[str, str], QFormLayout] = {}
        self.vram_panel = QtVramPanel()
        self._build_layout()
        self.binder.edited.connect(self._on_field_edited)

        self._schedule_estimate = qdebounced(self._update_estimate, timeout=ESTIMATE_DEBOUNCE_MS, parent=self)
        self._schedule_detection = qdebounced(self._start_detection, timeout=DETECT_DEBOUNCE_MS, parent=self)
        self.model_picker.model_changed.connect(self._on_model_edited)
        self.model_picker.trust_changed.connect(self._on_model_edited)
        self.model_picker.download_finished.connect(lambda _folder: self.session.model_downloaded())
        self.preset_combo.activated.connect(lambda index: self.apply_preset(self.preset_combo.itemData(index)))
        self.save_preset_button.clicked.connect(self._ask_preset_name)
        self.copy_command_button.clicked.connect(self.copy_command)
        self.fit_button.clicked.connect(self.fit_to_gpu)

        unsubscribe = self.session.subscribe(self._on_session_changed)
        self.destroyed.connect(lambda *_: unsubscribe())  # the session (and its draft) may outlive the widget
        # The draft's values from the first paint (the documented defaults), not the widgets' minimums.
        self._on_session_changed(ConfigChange(frozenset({"fields", "presets", "layers", "message", "fit"})))
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # --- layout ---------------------------------------------------------------------------------------
    def _form(self, box: FormBox) -> QGroupBox:
        group = QGroupBox(box.title)
        form = QFormLayout(group)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        for row in box.rows:
            if isinstance(row, FormField):
                widget = self.binder.make(row)
                setattr(self, row.key, widget)
                self._form_of[(row.section, row.name)] = form
                label = row.label
            else:
                widget, label = self._notes[row.key], row.label
            if label is None:
                form.addRow(widget)
                continue
            form.addRow(label, widget)
            if (label_widget := form.labelForField(widget)) is not None and widget.toolTip():
                label_widget.setToolTip(widget.toolTip())
        return group

    def _columns(self, columns: tuple[tuple[FormBox, ...], ...], *, stretch: bool) -> QtReflowingRow:
        layouts = []
        for boxes in columns:
            layout = QVBoxLayout()
            for box in boxes:
                layout.addWidget(self._form(box))
            if not stretch and not layouts:  # the first column's last box as tall as the column beside it
                layout.setStretch(layout.count() - 1, 1)
            layouts.append(layout)
        return QtReflowingRow(*layouts, stretch=stretch)

    def _build_layout(self) -> None:
        model_box = QGroupBox("Base model")
        QVBoxLayout(model_box).addWidget(self.model_picker)
        preset_row = QHBoxLayout()
        for widget, stretch in ((QLabel("Preset"), 0), (self.preset_combo, 0), (self.preset_hint, 1),
                                (self.save_preset_button, 0), (self.copy_command_button, 0)):
            preset_row.addWidget(widget, stretch)
        # Two columns side by side where they fit, one above the other where they do not (see `_reflow`).
        columns = self._columns(FIRST_COLUMNS, stretch=True)
        advanced_columns = self._columns(ADVANCED_COLUMNS, stretch=False)
        advanced_content = QWidget()
        advanced_layout = QVBoxLayout(advanced_content)
        advanced_layout.setContentsMargins(0, 0, 0, 0)
        advanced_layout.addLayout(advanced_columns)
        for box in ADVANCED_BELOW:
            advanced_layout.addWidget(self._form(box))
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
        # The fit's report scrolls with the form: however many lines it has, the tab needs no more height.
        inner_layout.addWidget(self.fit_label)
        inner_layout.addLayout(columns)
        inner_layout.addWidget(self.advanced)
        inner_layout.addStretch(1)
        self.scroll_area = self._scrolling(inner)
        self._rows = (columns, advanced_columns)
        self.scroll_area.installEventFilter(self)
        inner.installEventFilter(self)

        # As wide as its breakdown needs (350 px with the usual font), never squeezed below that; as tall as its
        # lines need, scrolling in a short window (GRPO's extra lines, a CPU run's notes) rather than overlapping.
        self.vram_panel.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.estimate_area = QtVerticalScrollArea(self.vram_panel)
        body = QHBoxLayout()
        body.addWidget(self.scroll_area, 1)
        body.addWidget(self.estimate_area)
        fit_row = QHBoxLayout()
        fit_row.addWidget(self.fit_button)
        fit_row.addWidget(self.context_label, stretch=1)

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addLayout(preset_row)
        layout.addLayout(fit_row)
        layout.addWidget(self.command_label)
        layout.addLayout(body, 1)

    @staticmethod
    def _scrolling(inner: QWidget) -> QScrollArea:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # Scrolls sideways only when even one column does not fit (a very narrow window).
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(inner)
        return scroll

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

    # --- session → widgets -----------------------------------------------------------------------------
    def _on_session_changed(self, change: ConfigChange) -> None:
        if change.touches("fields"):
            draft = change.draft
            if draft is None or draft.source is not self:  # the form's own edit is already on screen
                self._show_fields(draft)
            if draft is None or draft.touches("model", "name_or_path", "trust_remote_code"):
                self._schedule_detection()
            self._show_dependent()
        if change.touches("shape"):
            self._schedule_detection()  # a download has just put the model's files in the cache
        if change.touches("presets"):
            self._fill_presets()
        if change.touches("preset", "presets"):
            self._show_preset()
        if change.touches("layers"):
            self.detected_label.setText(self.session.layers_text)
            self.detected_label.setToolTip(self.session.layers_tip)
            if self.session.detected is not None:
                self.modules_detected.emit(self.session.detected)
        if change.touches("message"):
            self.command_label.setStyleSheet(f"color: {style.RED};" if self.session.message_is_error else "")
            self.command_label.setText(self.session.message)
            self.command_label.setToolTip(self.session.message)
            self.command_label.setVisible(bool(self.session.message))
        if change.touches("fit", "fields"):
            self.fit_label.setText(self.session.fit_report)
            self.fit_label.setVisible(bool(self.session.fit_report))
        if change.touches("fields", "preset", "device", "shape"):
            self._schedule_estimate()

    def _show_fields(self, change) -> None:
        """Show the draft's values of the fields that changed (every field for a new config)."""
        config = self.draft.config
        for section, name in self.binder.widgets:
            if change is None or change.touches(section, name):
                self.binder.show(section, name, getattr(getattr(config, section), name))
        if change is None or change.touches("model", "name_or_path", "trust_remote_code"):
            self.model_picker.set_model(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)

    def _show_dependent(self) -> None:
        """What follows from the fields: which are shown and enabled, the effective batch, the notes."""
        session = self.session
        for (section, name), widget in self.binder.widgets.items():
            widget.setEnabled(session.field_enabled(section, name))
            if widget.isHidden() == (shown := session.field_shown(section, name)):
                self._form_of[(section, name)].setRowVisible(widget, shown)
        self.effective_batch.setText(session.effective_batch())
        self.eval_summary.setText(session.evaluation_summary())
        self.method_note.setText(session.method_note())
        line, tip = session.fast_path()
        self.fast_path_label.setText(line)
        self.fast_path_label.setToolTip(tip)

    def refresh_evaluation(self) -> None:
        """Say again what is held out for eval: the Dataset tab has read (another) row count."""
        self.eval_summary.setText(self.session.evaluation_summary())

    # --- widgets → session ------------------------------------------------------------------------------
    def _on_field_edited(self, field: FormField, value: Any) -> None:
        self.session.edit(field.section, field.name, value, source=self)
        self.changed.emit()

    def _on_model_edited(self, *_args: Any) -> None:
        self.session.set_model(self.model_picker.model(), self.trust_remote_code.isChecked(), source=self)
        self.changed.emit()

    @property
    def method_fields(self) -> dict[tuple[str, str], QWidget]:
        """Each method's own settings' widgets by (section, name): the method's section and the setting."""
        return {key: widget for key, widget in self.binder.widgets.items() if key[0] in method_labels()}

    def set_config(self, config) -> None:
        """Give the draft a new config, which the form (and every other view of the draft) then shows; does not
        emit `changed`."""
        self.draft.set_config(config)

    def apply_to(self, config) -> None:
        """Write the form's fields (the model with them), as the draft holds them, into another config."""
        model = self.draft.config.model
        config.model.name_or_path, config.model.trust_remote_code = model.name_or_path, model.trust_remote_code
        for section, values in form_values(self.draft.config).items():
            for name, value in values.items():
                setattr(getattr(config, section), name, copy.deepcopy(value))

    def current_config(self):
        """A copy of the draft's config (or of `config_source`'s)."""
        return self.session.current_config()

    def model_path(self) -> Path | None:
        text = self.draft.config.model.name_or_path
        return Path(text) if text else None

    def set_target_shortcut(self, which: str) -> None:
        """Fill target modules with attention-only, attention+MLP (by name) or PEFT's all-linear."""
        self.session.set_target_shortcut(which)
        self.changed.emit()

    # --- layer names ------------------------------------------------------------------------------------
    def _start_detection(self) -> None:
        if (request := self.session.layers_request(busy=self.detect_worker is not None)) is None:
            return
        model, trust = request
        self.detect_worker = self._detection.start(
            lambda state: read_layer_names(model, trust_remote_code=trust),
            on_result=lambda modules: self.session.layers_read(model, trust, modules),
            on_error=self.session.layers_failed, on_done=self._on_detection_ended, expected_errors=LAYER_READ_ERRORS,
            name="read layer names")

    def _on_detection_ended(self) -> None:
        self.detect_worker = None
        if not self._shut_down and self.session.layers_pending():
            self._schedule_detection()  # the model changed while the last one was read

    # --- presets --------------------------------------------------------------------------------------
    def reload_presets(self) -> list[str]:
        """Fill the preset list (built-in, then the user's); returns messages for unreadable files."""
        return self.session.reload_presets()

    def _fill_presets(self) -> None:
        with signals_blocked(self.preset_combo):
            self.preset_combo.clear()
            for key in self.session.presets:
                self.preset_combo.addItem(self.session.preset_label(key), key)

    def _show_preset(self) -> None:
        with signals_blocked(self.preset_combo):
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(self.session.preset_key))
        text, tip = self.session.preset_hint()
        self.preset_hint.setText(text)
        self.preset_hint.setToolTip(tip)

    def _show_preset_edited(self) -> None:
        """The preset box says "edited" once a field differs from the chosen preset."""
        key, index = self.session.preset_key, self.preset_combo.currentIndex()
        if key is None or index < 0:
            return
        label = self.session.preset_label(key)
        self.preset_combo.setItemText(index, f"{label} — edited" if self.session.preset_edited() else label)

    def show_preset(self, key: str) -> bool:
        """Show `key` as the chosen preset without applying it (the window restores the last choice); False for a
        preset that no longer exists."""
        return self.session.show_preset(key)

    def selected_preset(self):
        return self.session.selected_preset()

    def apply_preset(self, key: str) -> None:
        """Set every knob from a preset (the model and the data stay); emits `changed`."""
        self.session.choose_preset(key)
        self.preset_chosen.emit(key)
        self.changed.emit()

    def save_preset(self, name: str) -> Path | None:
        """Save the current knobs as a user preset and select it."""
        return self.session.save_preset(name)

    def _ask_preset_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset", "Preset name:")
        if ok and name.strip():
            self.save_preset(name)

    # --- copy as command ------------------------------------------------------------------------------
    def command_config_path(self, config) -> Path:
        """Where "Copy as command" saves the config: one file per run name or model."""
        return command_config_path(config)

    def copy_command(self) -> str | None:
        """Save the config to a TOML file and copy `finetune-studio train FILE` to the clipboard."""
        if (command := self.session.copy_command()) is not None:
            QGuiApplication.clipboard().setText(command)
            self.last_command = command
        return command

    # --- the estimate and the fit -------------------------------------------------------------------------
    def _update_estimate(self) -> None:
        view = self.session.estimate()
        if view.estimate is None:
            self.vram_panel.set_unavailable(view.unavailable or NO_MODEL_TEXT)
        else:
            self._show_preset_edited()
            self.vram_panel.setTitle(view.title)
            self.vram_panel.set_estimate(view.estimate, limit_bytes=view.limit, against=view.against,
                                         source=view.source)
        self.context_label.setText(view.context)
        self.context_label.setToolTip(view.context)
        self.estimate_updated.emit(view.estimate)

    def fit_to_gpu(self) -> None:
        """Apply the planner's fastest settings that fit (written through the draft), and show the estimate before
        and after and why; where nothing fits, change nothing and say what would."""
        plan = self.session.fit()
        self.scroll_area.ensureWidgetVisible(self.fit_label)  # the report sits above the form
        if plan is not None and plan.fits:
            self.changed.emit()

    def shutdown(self) -> None:
        """Stop background work (a download is cancelled; what it fetched stays in the cache)."""
        self._shut_down = True
        self.model_picker.shutdown()
        self._detection.shutdown(60_000)
