"""Help → System check, Help → Copy diagnostics and the start-up banner: the window's face of the doctor.

The checks run on a TaskRunner (they import torch and run a 4-bit matmul: seconds); the DoctorSession decides
whether they run at start-up (a first launch, another device) and which findings the banner shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QMainWindow, QMenu, QPlainTextEdit, QToolBar,
                               QVBoxLayout)

from studio.core.sessions.doctor import DoctorReport, DoctorSession, diagnostics_report, examine, format_checks
from studio.ui.background import TaskRunner
from studio.ui.widgets.qt_system_banner import QtSystemBanner


START_DELAY_MS = 2000


class CheckCancelled(Exception):
    """The window closed while the checks ran."""


class QtSystemCheckDialog(QDialog):
    """Every finding with its level and fix, as selectable text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("System check")
        self.resize(820, 480)
        layout = QVBoxLayout(self)
        self.status = QLabel("Checking this machine…")
        self.text = QPlainTextEdit(readOnly=True)
        layout.addWidget(self.status)
        layout.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def show_report(self, report: DoctorReport) -> None:
        self.status.setText({"ok": "Nothing stands in the way of training here.",
                             "warn": "The studio trains here; the warnings below say what would make it better.",
                             "fail": "The studio cannot train here until the failures below are fixed."}[report.level])
        self.text.setPlainText(format_checks(report.checks))


class QtSystemCheck:
    """Owns the doctor session, its task, the banner (a fixed tool bar at the top of `window`) and the dialog."""

    def __init__(self, window: QMainWindow, *, config: Callable[[], Any],
                 session: DoctorSession | None = None, examine_fn: Callable[..., DoctorReport] = examine,
                 runs: Callable[[], list[Path]] | None = None):
        self.window, self._config, self._examine = window, config, examine_fn
        self._runs = runs  # the run folders newest first, from the window's runs session
        self.session = session or DoctorSession()
        self.tasks = TaskRunner(window)
        self.banner = QtSystemBanner()
        self.dialog: QtSystemCheckDialog | None = None
        self._copy_when_done = False
        bar = QToolBar("System check", window)
        bar.setObjectName("systemCheckBar")
        bar.setMovable(False)
        bar.setFloatable(False)
        bar.toggleViewAction().setVisible(False)
        bar.addWidget(self.banner)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.bar = bar
        self.banner.details_requested.connect(self.open_dialog)
        self.session.subscribe(self._on_report)
        due, recorded = self.session.start_up()
        self._show_banner(recorded)
        if due:
            # After the first paint: the checks import torch, which would hold the interpreter while the window
            # paints (and the first paint imports nothing of the training stack; benchmarks/first_paint.py).
            QTimer.singleShot(START_DELAY_MS, window, self._run_if_open)

    def add_actions(self, menu: QMenu) -> None:
        self.check_action = QAction("System check…", self.window)
        self.check_action.setToolTip("What will go wrong on this machine before the first run, with the fix")
        self.check_action.triggered.connect(self.open_dialog)
        self.copy_action = QAction("Copy diagnostics", self.window)
        self.copy_action.setToolTip("The checks, versions, OS, card and driver, the last failure: for a bug report "
                                    "(your home folder and name replaced, no token)")
        self.copy_action.triggered.connect(self.copy_diagnostics)
        menu.addAction(self.check_action)
        menu.addAction(self.copy_action)

    def run(self) -> None:
        def check(state):
            def progress(step: str) -> None:
                # Between the steps (importing torch, the 4-bit matmul): a window closing mid-check waits only for the
                # step under way.
                if state.cancelled():
                    raise CheckCancelled(step)
                state.progress(step)

            return self._examine(self._config(), display=None, progress=progress)

        self.tasks.start(check, on_result=self.session.apply, name="system check",
                         on_error=lambda error: self._dialog_text(f"The check itself failed: "
                                                                  f"{type(error).__name__}: {error}"))

    def _run_if_open(self) -> None:
        if self.window.isVisible():  # a window closed before the delay has no one to wait for the checks
            self.run()

    def open_dialog(self) -> None:
        if self.dialog is None:
            self.dialog = QtSystemCheckDialog(self.window)
        if self.session.report is not None:
            self.dialog.show_report(self.session.report)
        self.dialog.show()
        self.run()  # fresh findings: the user may have just fixed something

    def copy_diagnostics(self) -> None:
        if self.session.report is None or self.tasks.busy:
            self._copy_when_done = True
            if not self.tasks.busy:
                self.run()
            return
        runs = self._runs() if self._runs is not None else None
        QGuiApplication.clipboard().setText(diagnostics_report(self.session.report, runs=runs))
        self.window.statusBar().showMessage("Diagnostics copied: paste them into the bug report.", 8000)

    def _on_report(self, report: DoctorReport) -> None:
        self._show_banner(self.session.banner)
        if self.dialog is not None:
            self.dialog.show_report(report)
        if self._copy_when_done:
            self._copy_when_done = False
            self.copy_diagnostics()

    def _show_banner(self, checks) -> None:
        self.banner.show_checks(list(checks))
        self.bar.setVisible(bool(checks))

    def _dialog_text(self, text: str) -> None:
        if self.dialog is not None:
            self.dialog.status.setText(text)
