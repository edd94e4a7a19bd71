"""A panel tailing a run's train.log, with warnings and errors highlighted.

The training process writes its console straight into the file (see studio.ui.training_supervisor), so the
panel reads the file: a timer takes at most one small chunk per tick, which keeps every read and
every insert far below a frame however fast the log grows, and a long log is never read whole
(re-opening a run shows its last part).
"""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QFontDatabase, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from studio.ui.widgets import _plot_style as style

__all__ = ["QtLogPanel", "classify_line"]

PLAIN, WARNING, ERROR = "plain", "warning", "error"

_ERROR = re.compile(r"Traceback \(most recent call last\)|\w*(Error|Exception)\b|out of memory|\bkilled\b"
                    r"|\bfatal\b|segmentation fault|core dumped", re.IGNORECASE)
_WARNING = re.compile(r"warn|deprecat", re.IGNORECASE)
_TRACEBACK = "Traceback (most recent call last)"
_COLOURS = {WARNING: "#9a6700", ERROR: style.RED}


def classify_line(line: str) -> str:
    """'error', 'warning' or 'plain' for one log line."""
    if _ERROR.search(line):
        return ERROR
    if _WARNING.search(line):
        return WARNING
    return PLAIN


class QtLogPanel(QWidget):
    """Tails one log file. Signals: `problem_seen(kind, line)` for each warning (once, however many lines it
    takes) or error line."""

    problem_seen = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, interval_ms: int = 250, chunk_bytes: int = 32 * 1024,
                 initial_tail_bytes: int = 256 * 1024, max_lines: int = 5000):
        super().__init__(parent)
        self.chunk_bytes = chunk_bytes
        self.initial_tail_bytes = initial_tail_bytes
        self._path: Path | None = None
        self._offset = 0
        self._pending = b""
        self._in_traceback = False
        self._in_warning = False  # the indented lines after a warning belong to it
        self._skip_partial_first_line = False  # after starting mid-file
        self.counts = {WARNING: 0, ERROR: 0}

        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(max_lines)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.view.setPlaceholderText("The training process's output (train.log) appears here.")
        self.title = QLabel("Log")
        self.title.setStyleSheet("font-weight: 600;")
        self.summary = QLabel("")
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.view)

        self._formats = {kind: QTextCharFormat() for kind in (PLAIN, WARNING, ERROR)}
        for kind, colour in _COLOURS.items():
            self._formats[kind].setForeground(QColor(colour))
        self._formats[ERROR].setFontWeight(600)

        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)
        # Following the end is a state the user changes by scrolling, not a guess made at each append: after a
        # large insert the scroll range is only updated once the text is laid out, so "is it at the bottom
        # now?" answered no and the view stopped following (seen after re-attaching to a long log).
        self._follow = True
        self._scrolling_to_end = False
        self.view.verticalScrollBar().valueChanged.connect(self._on_scrolled)

    # --- API -------------------------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self._path

    def set_path(self, path: Path | None) -> None:
        """Show this file (from its last `initial_tail_bytes`) and follow it while the timer runs."""
        self._path = Path(path) if path is not None else None
        self._pending, self._in_traceback, self._skip_partial_first_line = b"", False, False
        self._in_warning = False
        self.counts = {WARNING: 0, ERROR: 0}
        self.view.clear()
        self._follow = True
        self._offset = 0
        self.title.setText(f"Log — {self._path.name}" if self._path else "Log")
        if self._path is not None and self._path.is_file():
            size = self._path.stat().st_size
            if size > self.initial_tail_bytes:
                self._offset = size - self.initial_tail_bytes
                self._skip_partial_first_line = True
                self._append_lines([f"… (the first {self._offset // 1024} KiB are in {self._path})"], force=PLAIN)
        self._update_summary()

    def start(self) -> None:
        self.poll()
        self._timer.start()

    def stop(self) -> None:
        """Stop following (reads what is left first)."""
        self._timer.stop()
        self.poll(until_end=True)

    def poll(self, *, until_end: bool = False) -> int:
        """Read the next chunk (all that is left with `until_end`); returns the number of new lines."""
        if self._path is None:
            return 0
        added = 0
        while True:
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._offset)
                    chunk = f.read(self.chunk_bytes)
            except OSError:
                return added
            if not chunk:
                return added
            self._offset += len(chunk)
            data = self._pending + chunk
            end = data.rfind(b"\n")
            if end < 0 and len(data) < 4 * self.chunk_bytes:
                self._pending = data  # a line still being written
            else:
                cut = end + 1 if end >= 0 else len(data)
                complete, self._pending = data[:cut], data[cut:]
                if self._skip_partial_first_line:
                    self._skip_partial_first_line = False
                    complete = complete.split(b"\n", 1)[1] if b"\n" in complete else b""
                lines = [_last_carriage_part(line) for line in complete.decode("utf-8", "replace").split("\n")]
                if lines and lines[-1] == "":
                    lines.pop()
                self._append_lines(lines)
                added += len(lines)
            if not until_end:
                return added

    def text(self) -> str:
        return self.view.toPlainText()

    @property
    def warning_count(self) -> int:
        return self.counts[WARNING]

    @property
    def error_count(self) -> int:
        return self.counts[ERROR]

    def line_kind(self, block_number: int) -> str:
        """The highlight of a shown line (tests)."""
        block = self.view.document().findBlockByNumber(block_number)
        cursor = QTextCursor(block)
        cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
        colour = cursor.charFormat().foreground().color().name()
        return {QColor(c).name(): kind for kind, c in _COLOURS.items()}.get(colour, PLAIN)

    # --- internals -------------------------------------------------------------------------------------
    def _classify(self, line: str) -> tuple[str, bool]:
        """The line's highlight, and whether it starts a new problem (the counts and `problem_seen`)."""
        if _TRACEBACK in line:
            self._in_traceback, self._in_warning = True, False
            return ERROR, True
        if self._in_traceback:
            if not (line[:1].isspace() or not line.strip()):
                self._in_traceback = False  # the exception's own line closes the traceback
            return ERROR, True
        if self._in_warning and line[:1].isspace() and line.strip():
            # Python prints a warning as `file:line: Category: message` and then the source line that raised it,
            # indented (`  warnings.warn(`): one warning, which counted twice made a clean run show "2 warning(s)".
            return WARNING, False
        kind = classify_line(line)
        self._in_warning = kind == WARNING
        return kind, kind != PLAIN

    def _append_lines(self, lines: list[str], force: str | None = None) -> None:
        if not lines:
            return
        cursor = QTextCursor(self.view.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        # Consecutive lines of one kind go in with one insert: far fewer layout passes than a line each.
        run_kind, run_lines = None, []
        first = self.view.document().isEmpty()
        for line in lines:
            kind, new_problem = (force, False) if force else self._classify(line)
            if new_problem:
                self.counts[kind] += 1
                self.problem_seen.emit(kind, line)
            if kind != run_kind and run_lines:
                first = self._insert(cursor, run_lines, run_kind, first)
                run_lines = []
            run_kind = kind
            run_lines.append(line)
        if run_lines:
            self._insert(cursor, run_lines, run_kind, first)
        cursor.endEditBlock()
        if self._follow:
            self._scroll_to_end()
            QTimer.singleShot(0, self._scroll_to_end)  # again once the new text is laid out
        self._update_summary()

    def _scroll_to_end(self) -> None:
        if not self._follow:
            return
        bar = self.view.verticalScrollBar()
        self._scrolling_to_end = True
        try:
            bar.setValue(bar.maximum())
        finally:
            self._scrolling_to_end = False

    def _on_scrolled(self, value: int) -> None:
        if not self._scrolling_to_end:
            bar = self.view.verticalScrollBar()
            self._follow = value >= bar.maximum() - 4

    def _insert(self, cursor: QTextCursor, lines: list[str], kind: str, first: bool) -> bool:
        text = "\n".join(lines)
        cursor.insertText(text if first else "\n" + text, self._formats[kind])
        return False

    def _update_summary(self) -> None:
        parts = []
        if self.counts[ERROR]:
            parts.append(f"<span style='color:{_COLOURS[ERROR]}; font-weight:600'>{self.counts[ERROR]} error line(s)</span>")
        if self.counts[WARNING]:
            parts.append(f"<span style='color:{_COLOURS[WARNING]}'>{self.counts[WARNING]} warning(s)</span>")
        self.summary.setText(" · ".join(parts))


def _last_carriage_part(line: str) -> str:
    """A progress bar rewrites its line with carriage returns; keep what it finally showed."""
    line = line.rstrip("\r")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line
