"""The banner at the top of the window: a finding of the doctor that stops or silently slows training, with its fix.

Not a dialog to dismiss: it stays until the finding is gone (the next check after the machine changed). It shows
what it is given (doctor Checks); when to show it is the doctor session's decision.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

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
        self._layout.setContentsMargins(10, 6, 10, 6)
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
        for check in checks:
            head = QLabel(f"<b>{'Cannot train here' if check.level == FAIL else 'Check this'} — "
                          f"{check.title}:</b> {check.found}")
            head.setWordWrap(True)
            self._layout.addWidget(head)
            if check.fix:
                row = QHBoxLayout()
                fix = QLabel(f"Fix: <code>{check.fix}</code>")
                fix.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                fix.setWordWrap(True)
                fix.setObjectName("fix")
                copy = QPushButton("Copy the fix")
                copy.clicked.connect(lambda _=False, text=check.fix: QGuiApplication.clipboard().setText(text))
                row.addWidget(fix, 1)
                row.addWidget(copy, 0, Qt.AlignmentFlag.AlignTop)
                self._layout.addLayout(row)
        more = QPushButton("System check…")
        more.clicked.connect(self.details_requested)
        self._layout.addWidget(more, 0, Qt.AlignmentFlag.AlignRight)

    def text(self) -> str:
        """What the banner says, as plain text (tests, accessibility)."""
        return "\n".join(f"{c.title}: {c.found}" + (f"\nFix: {c.fix}" if c.fix else "") for c in self.checks)
