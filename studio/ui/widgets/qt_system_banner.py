"""The banner at the top of the window: a finding of the doctor that stops or silently slows training, with its fix.

Not a dialog to dismiss: it stays until the finding is gone (the next check after the machine changed). It shows
what it is given (doctor Checks); when to show it is the doctor session's decision.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout

from studio.core.system.doctor import FAIL, Check

_COLOURS = {FAIL: ("#fdecea", "#b3261e"), "warn": ("#fff4e5", "#8a5300")}


class QtSystemBanner(QFrame):
    """Findings, each as its title and what was found, the fix in a selectable line, and a button to copy it."""

    details_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("systemBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(10, 4, 10, 4)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        self.checks: list[Check] = []

    def show_checks(self, checks: list[Check]) -> None:
        while (item := self._layout.takeAt(0)) is not None:
            if item.widget() is not None:
                item.widget().deleteLater()
        self.checks = list(checks)  # its container shows it while there are any (a tool bar item's own visibility is
        if not checks:              # its action's, not the widget's)
            return
        background, ink = _COLOURS[FAIL if any(c.level == FAIL for c in checks) else "warn"]
        self.setStyleSheet(f"#systemBanner {{ background: {background}; border: 1px solid {ink}; }}"
                           f" #systemBanner QLabel {{ color: {ink}; }}")
        for index, check in enumerate(checks):
            row = QHBoxLayout()
            fix = f"<br>Fix: <code>{html.escape(check.fix)}</code>" if check.fix else ""
            label = QLabel(f"<b>{'Cannot train here' if check.level == FAIL else 'Check this'} — "
                           f"{html.escape(check.title)}:</b> {html.escape(check.found)}{fix}")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
            row.addWidget(label, 1)
            if check.fix:
                copy = QPushButton("Copy the fix")
                copy.clicked.connect(lambda _=False, text=check.fix: QGuiApplication.clipboard().setText(text))
                row.addWidget(copy, 0, Qt.AlignmentFlag.AlignVCenter)
            if index == 0:
                more = QPushButton("System check…")
                more.clicked.connect(self.details_requested)
                row.addWidget(more, 0, Qt.AlignmentFlag.AlignVCenter)
            self._layout.addLayout(row)

    # A tool bar sizes an item by its sizeHint, which for wrapped text is a squarish guess: give it the height the
    # lines take at the banner's real width instead, and ask again when that width changes.
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        hint = super().sizeHint()
        width = self.width() if self.width() > 200 else max(hint.width(), 800)
        if self._layout.hasHeightForWidth():
            hint.setHeight(self._layout.totalHeightForWidth(width))
        return hint

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # The layout's own minimum wraps the text at its narrowest, many lines tall: the bar would keep that height.
        return QSize(min(400, super().minimumSizeHint().width()), self.sizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()

    def text(self) -> str:
        """What the banner says, as plain text (tests, accessibility)."""
        return "\n".join(f"{c.title}: {c.found}" + (f"\nFix: {c.fix}" if c.fix else "") for c in self.checks)
