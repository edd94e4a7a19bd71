"""Starting the window: the QApplication, its identity and icon, then the main window."""

from __future__ import annotations

import sys
from pathlib import Path


def icon_path() -> Path:
    from studio.core.system.paths import resource_path

    return resource_path("icons", "finetune-studio.png")


def run_app(argv: list[str] | None = None) -> int:
    from studio.ui.display_check import DISPLAY_EXIT_STATUS, display_problem

    # Before Qt is imported: when it cannot open a window it aborts the process (status 134) with a message that
    # may name the wrong library; this says what is missing and how to install it, in one line.
    if (problem := display_problem()) is not None:
        print(f"finetune-studio: {problem}", file=sys.stderr)
        return DISPLAY_EXIT_STATUS
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Finetune Studio")
    app.setOrganizationName("finetune-studio")
    app.setDesktopFileName("finetune-studio")
    if icon_path().is_file():
        app.setWindowIcon(QIcon(str(icon_path())))

    from studio.ui.main_window import QtMainWindow

    window = QtMainWindow()
    window.show()
    return app.exec()
