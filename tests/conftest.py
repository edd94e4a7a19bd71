"""Shared pytest configuration."""

import os

# Before any QApplication exists: tests run on headless CI and dev boxes.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
