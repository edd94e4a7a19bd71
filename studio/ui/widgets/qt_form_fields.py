"""Form widgets made from a field's description, and the one binder that shows a value in each and reports edits.

A field (duck-typed: `kind`, `help`, `bounds`, `step`, `decimals`, `text`, `special`, `placeholder`, and
`choices_offered()` giving (value, words) pairs) says which widget it needs; `QtFieldBinder` makes it, shows values in
it without echoing them back as edits, and signals `edited(field, value)` for what the user changes. Also the
layout helpers of a long form: a note label that wraps only where it must, and a row of two columns that
stacks when the width is short.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QBoxLayout, QCheckBox, QComboBox, QDoubleSpinBox, QFrame, QLabel, QLayout, QLineEdit, QScrollArea, QSizePolicy,
    QSpacerItem, QSpinBox, QWidget,
)
from superqt.utils import signals_blocked

from studio.ui.widgets.qt_reward_picker import QtRewardPicker

__all__ = ["QtFieldBinder", "QtNoteLabel", "QtReflowingRow", "QtScientificSpinBox", "QtVerticalScrollArea"]

NUMBER_WIDTH = 100


class QtScientificSpinBox(QDoubleSpinBox):
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


class QtNoteLabel(QLabel):
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


class QtReflowingRow(QBoxLayout):
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


class QtVerticalScrollArea(QScrollArea):
    """Scrolls one widget up and down, never sideways: as wide as the widget asks (with room for the bar, so its
    text never reflows when the bar comes), as short as the window needs. A panel whose lines grow (an estimate's
    breakdown and notes) then scrolls in a short window instead of squeezing its lines onto each other."""

    MINIMUM_HEIGHT = 120

    def __init__(self, widget: QWidget, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.setWidget(widget)
        widget.installEventFilter(self)

    def _width(self) -> int:
        return self.widget().sizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self._width(), self.widget().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self._width(), self.MINIMUM_HEIGHT)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # a wider breakdown line: the area asks for the width with it
        return super().eventFilter(watched, event)


def _number_box(box: QSpinBox | QDoubleSpinBox, field: Any) -> QWidget:
    """A number box offering the field's range, stepping and showing it as its metadata says."""
    if isinstance(box, QDoubleSpinBox) and field.decimals is not None:
        box.setDecimals(field.decimals)  # before the range: Qt rounds the bounds to the decimals
    box.setRange(*field.bounds)
    if field.step is not None:
        box.setSingleStep(field.step)
    if field.special:
        box.setSpecialValueText(field.special)
    box.setMinimumWidth(NUMBER_WIDTH)
    return box


def _choice(field: Any) -> QComboBox:
    box = QComboBox()
    for value, words in field.choices_offered():
        box.addItem(words, value)
    return box


def _line(field: Any) -> QLineEdit:
    edit = QLineEdit()
    edit.setPlaceholderText(field.placeholder)
    return edit


_MAKE: dict[str, Callable[[Any], QWidget]] = {
    "check": lambda field: QCheckBox(field.text),
    "choice": _choice,
    "int": lambda field: _number_box(QSpinBox(), field),
    "float": lambda field: _number_box(QDoubleSpinBox(), field),
    "rate": lambda field: _number_box(QtScientificSpinBox(), field),
    "list": _line,
    "text": _line,
    "rewards": lambda field: QtRewardPicker(),
}


def _set(kind: str, widget: Any, value: Any) -> None:
    if kind == "check":
        widget.setChecked(bool(value))
    elif kind == "choice":
        index = widget.findData(value)
        if index < 0:  # a value this machine does not offer (e.g. flash_attention_2 not installed)
            widget.addItem(f"{value} (not available here)", value)
            index = widget.count() - 1
        widget.setCurrentIndex(index)
    elif kind in ("int", "float", "rate"):
        widget.setValue(value)
    elif kind == "rewards":
        widget.set_rewards(value)
    else:
        widget.setText(", ".join(value) if kind == "list" else value)


def _get(kind: str, widget: Any) -> Any:
    if kind == "check":
        return widget.isChecked()
    if kind == "choice":
        return widget.currentData()
    if kind in ("int", "float", "rate"):
        return widget.value()
    if kind == "rewards":
        return widget.rewards()
    if kind == "list":
        return [part.strip() for part in widget.text().split(",") if part.strip()]
    return widget.text()


def _edit_signal(kind: str) -> str:
    return {"check": "toggled", "choice": "currentIndexChanged", "int": "valueChanged", "float": "valueChanged",
            "rate": "valueChanged", "rewards": "changed"}.get(kind, "textChanged")


class QtFieldBinder(QObject):
    """Makes each field's widget and binds it: `show` sets a value without an edit signal, `edited(field, value)`
    reports only what the user changed, read from that one widget."""

    edited = Signal(object, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.widgets: dict[tuple[str, str], QWidget] = {}
        self._fields: dict[tuple[str, str], Any] = {}

    def make(self, field: Any) -> QWidget:
        widget = _MAKE[field.kind](field)
        widget.setToolTip(field.help)
        key = (field.section, field.name)
        self.widgets[key], self._fields[key] = widget, field
        getattr(widget, _edit_signal(field.kind)).connect(
            lambda *_: self.edited.emit(field, _get(field.kind, widget)))
        return widget

    def show(self, section: str, name: str, value: Any) -> None:
        """Show `value` in the field's widget (if the form has one), without an `edited` signal."""
        if (widget := self.widgets.get((section, name))) is not None:
            with signals_blocked(widget):
                _set(self._fields[(section, name)].kind, widget, value)
