"""The token view: one example as the model sees it, trained tokens highlighted and masked ones dimmed."""

from __future__ import annotations

import html

from PySide6.QtCore import QMimeData, QUrl, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QTextBrowser

from studio.core.data.preview import ExamplePreview

__all__ = ["QtTokenView", "TRAINED_COLOURS", "MASKED_COLOURS", "legend_html"]

# Two shades per kind, alternating token by token, so the boundaries between tokens are visible.
TRAINED_COLOURS = ("#c8ecd0", "#9fdcae")
TRAINED_TEXT = "#0b3d16"
MASKED_COLOURS = ("#f3f3f3", "#e6e6e6")
MASKED_TEXT = "#8a8a8a"
TRUNCATED_BACKGROUND = "#fbe3e3"
TRUNCATED_TEXT = "#b3261e"

MAX_SHOWN_TOKENS = 1200
"""A longer example shows its first tokens until *show all* is clicked: painting thousands of spans takes
about 70 ms per thousand, all of it on the GUI thread."""


WORD_JOINER, TOKEN_BREAK = "\u2060", "\u200b"
"""Lines wrap between tokens (a zero-width space after each) and never inside one: Qt may break after any
punctuation, so `<|eot_id|>` came out as `<|` + `eot_id|>`; a word joiner after each such character forbids it."""


def _joined(text: str) -> str:
    """`text` with a word joiner after every character a line could break after (punctuation, CJK)."""
    out = []
    for i, char in enumerate(text):
        out.append(char)
        breakable = not (char.isdigit() or (char.isalpha() and ord(char) < 0x2E80)) and char not in " \t\r\n"
        if breakable and i < len(text) - 1:
            out.append(WORD_JOINER)
    return "".join(out)


def _without_break_controls(text: str) -> str:
    return text.replace(WORD_JOINER, "").replace(TOKEN_BREAK, "")


def _visible(text: str) -> str:
    """Token text as HTML, with line breaks and tabs made visible, never wrapped inside."""
    escaped = html.escape(_joined(text)).replace("\t", "→").replace(" ", "&nbsp;")
    return escaped.replace("\r", "").replace("\n", "↵<br>")


class QtTokenView(QTextBrowser):
    """Shows an ExamplePreview; hovering a token reports it through `token_hovered(str)`."""

    token_hovered = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setReadOnly(True)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.setFont(font)
        self.document().setDefaultStyleSheet("a { text-decoration: none; }")
        self.highlighted.connect(self._on_hover)
        self.anchorClicked.connect(self._on_click)
        self.preview: ExamplePreview | None = None
        self.shown_tokens = 0

    def plain_text(self) -> str:
        """What the view shows, as text (without the invisible line-break controls)."""
        return _without_break_controls(self.toPlainText())

    def createMimeDataFromSelection(self) -> QMimeData:  # noqa: N802 - Qt API
        # Copied text is the tokens' own, not laced with zero-width characters.
        mime = QMimeData()
        mime.setText(_without_break_controls(self.textCursor().selection().toPlainText()))
        return mime

    def show_message(self, text: str) -> None:
        """A line of grey text in place of tokens (no model yet, loading, an error)."""
        self.preview = None
        self.shown_tokens = 0
        self.setHtml(f"<p style='color:{MASKED_TEXT}'>{html.escape(text)}</p>")

    def show_preview(self, preview: ExamplePreview, *, limit: int | None = MAX_SHOWN_TOKENS) -> None:
        self.preview = preview
        parts = []
        shown = preview.pieces if limit is None else preview.pieces[:limit]
        for piece in shown:
            shade = piece.index % 2
            if piece.truncated:
                style = (f"background-color:{TRUNCATED_BACKGROUND}; color:{TRUNCATED_TEXT}; "
                         "text-decoration: line-through")
            elif piece.trained:
                style = f"background-color:{TRAINED_COLOURS[shade]}; color:{TRAINED_TEXT}"
            else:
                style = f"background-color:{MASKED_COLOURS[shade]}; color:{MASKED_TEXT}"
            if piece.special:
                style += "; font-weight:600"
            text = _visible(piece.text) if piece.text else "&#8203;"
            parts.append(f"<a href='#{piece.index}' style='{style}'>{text}</a>{TOKEN_BREAK}")
        if len(shown) < len(preview.pieces):
            parts.append(f"<br><br><span style='color:{MASKED_TEXT}'>… {len(preview.pieces) - len(shown):,} more "
                         "tokens not shown — </span><a href='#all' style='color:#1f77b4'>show all</a>")
        self.shown_tokens = len(shown)
        self.setHtml("<div style='white-space: pre-wrap; line-height: 135%'>" + "".join(parts) + "</div>")

    def _on_click(self, url: QUrl) -> None:
        if url.fragment() == "all" and self.preview is not None:
            self.show_preview(self.preview, limit=None)

    def _on_hover(self, url: QUrl) -> None:
        if self.preview is None or not url.fragment().isdigit():
            self.token_hovered.emit("")
            return
        index = int(url.fragment())
        if index >= len(self.preview.pieces):
            return
        piece = self.preview.pieces[index]
        state = "truncated (beyond max_length)" if piece.truncated else ("trained" if piece.trained else "masked")
        self.token_hovered.emit(f"token {index + 1} of {len(self.preview.pieces)} · id {piece.token_id} · "
                                f"{piece.text!r} · {state}")


def legend_html() -> str:
    """The colours of the token view, as one line of rich text: trained, masked and cut tokens."""
    return (f"<span style='background:{TRAINED_COLOURS[0]}; color:{TRAINED_TEXT}'>&nbsp;trained&nbsp;</span>"
            f"<span style='background:{TRAINED_COLOURS[1]}; color:{TRAINED_TEXT}'>&nbsp;tokens&nbsp;</span>&nbsp; "
            f"<span style='background:{MASKED_COLOURS[0]}; color:{MASKED_TEXT}'>&nbsp;masked&nbsp;</span>"
            f"<span style='background:{MASKED_COLOURS[1]}; color:{MASKED_TEXT}'>&nbsp;tokens&nbsp;</span>&nbsp; "
            "<span style='background:#fbe3e3; color:#b3261e; text-decoration:line-through'>&nbsp;cut by "
            "max_length&nbsp;</span>")
