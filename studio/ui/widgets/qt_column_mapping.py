"""The column-mapping panel: which record shape the data has, and which column holds which field."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from superqt.utils import signals_blocked
from PySide6.QtWidgets import (
    QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from studio.core.data.shape import (
    FIELD_LABELS, FORMAT_NAMES, FORMATS, MAPPING_FIELDS, OPTIONAL_FIELDS, PREFERENCE_MAPPING_FIELDS,
)
from studio.core.sessions.dataset import format_name
from studio.core.data.table import LoadedData

__all__ = ["QtColumnMapping"]

_NONE = "— none —"


class QtColumnMapping(QWidget):
    """Signals `mapping_applied(format, mapping)`; format 'auto' with an empty mapping means detect."""

    mapping_applied = Signal(str, object)  # object: a QVariantMap would sort the fields

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[str] = []
        self.detected_format = ""
        self._suggested: dict[str, str] = {}
        self.format_combo = QComboBox()
        self.format_combo.addItem("Detect automatically", "auto")
        for fmt in FORMATS:
            self.format_combo.addItem(FORMAT_NAMES[fmt], fmt)
        self.format_combo.currentIndexChanged.connect(self._rebuild_fields)
        self.evidence_label = QLabel("Open a dataset to see how its records are read.")
        self.evidence_label.setWordWrap(True)
        self.evidence_label.setTextFormat(Qt.TextFormat.RichText)
        self.field_combos: dict[str, QComboBox] = {}
        self._fields_form = QFormLayout()
        self._fields_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.apply_button = QPushButton("Apply mapping")
        self.apply_button.setToolTip("Read the data again with this shape and these columns; the mapping is saved "
                                     "in the run's config (data.format, data.column_mapping) and used by training.")
        self.apply_button.clicked.connect(self._apply)
        self.reset_button = QPushButton("Back to automatic")
        self.reset_button.clicked.connect(self._reset)

        form = QFormLayout()
        form.addRow("Record shape", self.format_combo)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.evidence_label)
        layout.addLayout(form)
        layout.addLayout(self._fields_form)
        layout.addStretch(1)
        layout.addLayout(buttons)

    # --- filling -----------------------------------------------------------------------------------------
    def set_state(self, data: LoadedData | None, fmt: str, mapping: dict[str, str]) -> None:
        """Show the data's columns and detection, with the chosen format and mapping selected."""
        self.columns = list(data.columns) if data is not None else []
        self.detected_format = data.format if data is not None else ""
        self._suggested = dict(data.mapping) if data is not None and not data.format else {}
        if data is None:
            self.evidence_label.setText("Open a dataset to see how its records are read.")
        elif data.format:
            sure = "" if data.confident else " <b style='color:#b3261e'>Not every record agrees: check below.</b>"
            self.evidence_label.setText(f"Read as <b>{format_name(data.format)}</b>: {data.evidence}.{sure}")
        else:
            # The evidence says why, when the reader found any (a read for DPO of chat records finds none).
            why = f" {data.evidence.rstrip('.')}." if data.evidence.strip() else ""
            self.evidence_label.setText(f"<b style='color:#b3261e'>The record shape was not recognised.</b>{why} "
                                        "Choose the shape and the columns, then apply.")
        shown_format = fmt if fmt != "auto" else (self.detected_format or self._suggested_format(data))
        index = self.format_combo.findData(shown_format if (fmt != "auto" or not self.detected_format) else "auto")
        with signals_blocked(self.format_combo):
            self.format_combo.setCurrentIndex(max(index, 0))
        self._rebuild_fields(mapping=mapping or self._suggested)

    @staticmethod
    def _suggested_format(data: LoadedData | None) -> str:
        from studio.core.data.shape import format_from_mapping

        return format_from_mapping(data.mapping) if data is not None and data.mapping else "auto"

    def _effective_format(self) -> str:
        chosen = self.format_combo.currentData()
        return self.detected_format if chosen == "auto" else chosen

    def _rebuild_fields(self, *_args, mapping: dict[str, str] | None = None) -> None:
        while self._fields_form.rowCount():
            self._fields_form.removeRow(0)
        self.field_combos = {}
        fmt = self._effective_format()
        if not fmt:
            return
        mapping = mapping if mapping is not None else self._suggested
        # A preference method's shape (always detected) maps its own fields: prompt, chosen, rejected, label...
        for name in {**MAPPING_FIELDS, **PREFERENCE_MAPPING_FIELDS}.get(fmt, ()):
            combo = QComboBox()
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            if name in OPTIONAL_FIELDS:
                combo.addItem(_NONE, "")
            for column in self.columns:
                combo.addItem(column, column)
            wanted = mapping.get(name, name)
            index = combo.findData(wanted)
            if index < 0 and name not in OPTIONAL_FIELDS and self.columns:
                combo.addItem(f"{wanted} (missing)", wanted)
                index = combo.count() - 1
            combo.setCurrentIndex(max(index, 0))
            combo.setEnabled(self.format_combo.currentData() != "auto" or bool(self._suggested))
            self.field_combos[name] = combo
            self._fields_form.addRow(FIELD_LABELS.get(name, name), combo)

    # --- reading back ------------------------------------------------------------------------------------
    def chosen(self) -> tuple[str, dict[str, str]]:
        """(format, mapping) as chosen; only columns named differently from their field are listed."""
        fmt = self.format_combo.currentData()
        if fmt == "auto" and not self._suggested:
            return "auto", {}
        fmt = self._effective_format()
        mapping = {}
        for name, combo in self.field_combos.items():
            column = combo.currentData()
            if column and column != name:
                mapping[name] = column
        return fmt, mapping

    def _apply(self) -> None:
        fmt, mapping = self.chosen()
        self.mapping_applied.emit(fmt, mapping)

    def _reset(self) -> None:
        self.mapping_applied.emit("auto", {})
