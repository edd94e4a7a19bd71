"""The Config tab's GPU memory estimate: total, a fits / tight / won't fit badge, a stacked bar against
the card's free memory, and the breakdown line by line."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from studio.core.plan.vram import FITS, TIGHT, WONT_FIT, VramEstimate
from studio.core.system.units import format_bytes
from studio.ui.widgets import _plot_style as style

__all__ = ["QtVramPanel"]

_BADGE_COLOURS = {FITS: style.GREEN, TIGHT: style.ORANGE, WONT_FIT: style.RED}
_PURPLE = "#8e44ad"
_TEAL = "#17a2b8"
_BROWN = "#8c564b"
_LIGHT_GREY = "#b0b0b0"


def part_colour(name: str) -> str:
    """One colour per kind of memory, so the bar and the list read together."""
    if name.startswith(("base weights", "embeddings", "lm_head", "norms")):
        return style.BLUE
    if name.startswith(("LoRA", "modules_to_save")):
        return style.GREEN
    if name.startswith("optimizer"):
        return _TEAL
    if name.startswith("activations"):
        return style.ORANGE
    if name.startswith("logits"):
        return _PURPLE
    if name.startswith("backward"):
        return _BROWN
    if name.startswith("allocator"):
        return _LIGHT_GREY
    return style.GREY


class _QtStackedBar(QWidget):
    """The estimate's parts side by side, on a scale that shows the card's free memory as a line."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._parts: list[tuple[int, str]] = []
        self._limit = 0
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(240, 22)

    def set_parts(self, parts: list[tuple[int, str]], limit: int) -> None:
        self._parts = parts
        self._limit = limit
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 3.5, -0.5, -3.5)
        painter.setPen(QPen(QColor("#c8c8c8")))
        painter.setBrush(QColor("#f2f2f2"))
        painter.drawRoundedRect(rect, 3, 3)
        total = sum(size for size, _ in self._parts)
        scale = max(total, self._limit, 1)
        x = rect.left()
        painter.setPen(Qt.PenStyle.NoPen)
        for size, colour in self._parts:
            width = rect.width() * size / scale
            painter.setBrush(QColor(colour))
            painter.drawRect(QRectF(x, rect.top(), width, rect.height()))
            x += width
        if self._limit:
            limit_x = rect.left() + rect.width() * self._limit / scale
            painter.setPen(QPen(QColor(style.FOREGROUND), 2))
            painter.drawLine(int(limit_x), int(rect.top() - 3), int(limit_x), int(rect.bottom() + 3))
        painter.end()


NO_MODEL_TEXT = "Choose a model to see how much GPU memory training it needs."
_WIDTH = 350


class QtVramPanel(QGroupBox):
    """Shows a :class:`VramEstimate` against a memory limit, or why there is no estimate.

    Its width hint is 350 px, or more where the breakdown's lines need it (a larger font).
    """

    def __init__(self, parent=None):
        super().__init__("GPU memory estimate", parent)
        self.estimate: VramEstimate | None = None
        self.verdict: str | None = None
        self.total_label = QLabel("—")
        font = self.total_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.total_label.setFont(font)
        self.badge = QLabel()
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.hide()
        top = QHBoxLayout()
        top.addWidget(self.total_label)
        top.addSpacing(8)
        top.addWidget(self.badge)
        top.addStretch(1)
        self.against_label = QLabel()
        self.against_label.setWordWrap(True)
        self.bar = _QtStackedBar()
        self._rows = QGridLayout()
        self._rows.setHorizontalSpacing(6)
        self._rows.setVerticalSpacing(2)
        self._rows.setColumnStretch(1, 1)
        self._row_widgets: list[tuple[QLabel, QLabel, QLabel]] = []
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        self.notes_label = QLabel()
        self.notes_label.setWordWrap(True)
        for label in (self.source_label, self.notes_label):
            label.setStyleSheet(f"color: {style.MUTED};")

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.against_label)
        layout.addWidget(self.bar)
        layout.addLayout(self._rows)
        layout.addWidget(self.source_label)
        layout.addWidget(self.notes_label)
        layout.addStretch(1)
        # The first text is there before the first layout: a label filled later has, for a paint or
        # two, the height of an empty one, and its two lines overlap.
        self.set_unavailable(NO_MODEL_TEXT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        hint = super().sizeHint()
        return QSize(max(_WIDTH, self.minimumSizeHint().width()), hint.height())

    def _row(self, index: int) -> tuple[QLabel, QLabel, QLabel]:
        while len(self._row_widgets) <= index:
            swatch, name, size = QLabel(), QLabel(), QLabel()
            swatch.setFixedSize(10, 10)
            size.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            row = len(self._row_widgets)
            self._rows.addWidget(swatch, row, 0, Qt.AlignmentFlag.AlignVCenter)
            self._rows.addWidget(name, row, 1)
            self._rows.addWidget(size, row, 2)
            self._row_widgets.append((swatch, name, size))
        return self._row_widgets[index]

    def set_estimate(self, estimate: VramEstimate, *, limit_bytes: int, against: str, source: str) -> None:
        """Show an estimate compared with `limit_bytes` of free memory (`against` says whose)."""
        self.estimate = estimate
        self.verdict = estimate.verdict(limit_bytes)
        self.total_label.setText(format_bytes(estimate.total, style='estimate'))
        colour = _BADGE_COLOURS[self.verdict]
        self.badge.setText(f" {self.verdict} ")
        self.badge.setStyleSheet(f"background: {colour}; color: white; border-radius: 4px; padding: 2px 8px;"
                                 "font-weight: bold;")
        self.badge.show()
        self.against_label.setText(f"of {format_bytes(limit_bytes, style='estimate')} — {against}")
        parts = list(estimate.breakdown.items())
        self.bar.set_parts([(size, part_colour(name)) for name, size in parts], limit_bytes)
        for index, (name, size) in enumerate(parts):
            swatch, name_label, size_label = self._row(index)
            swatch.setStyleSheet(f"background: {part_colour(name)}; border-radius: 2px;")
            name_label.setText(name)
            size_label.setText(format_bytes(size, style='estimate'))
            for widget in (swatch, name_label, size_label):
                widget.show()
        for swatch, name_label, size_label in self._row_widgets[len(parts):]:
            for widget in (swatch, name_label, size_label):
                widget.hide()
        self.source_label.setText(f"Model shape: {source}")
        self.notes_label.setText("\n".join(f"• {note}" for note in estimate.notes))
        self._relayout()

    def set_unavailable(self, reason: str) -> None:
        """No estimate (e.g. no model chosen yet, or its config.json is not on this machine)."""
        self.estimate = None
        self.verdict = None
        self.total_label.setText("—")
        self.badge.hide()
        self.against_label.setText(reason)
        self.bar.set_parts([], 0)
        for row in self._row_widgets:
            for widget in row:
                widget.hide()
        self.source_label.setText("")
        self.notes_label.setText("")
        self._relayout()

    def _relayout(self) -> None:
        """Give the labels their new heights now rather than at the next layout pass, so no paint in
        between draws new text in old, shorter boxes."""
        if self.isVisible():
            self.layout().activate()
