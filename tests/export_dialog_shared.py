"""What tests/ui/tabs/test_export_dialog.py and tests/slow/test_export_dialog_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations


def _shown(label) -> str:
    """A rich-text label's text as the user reads it."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", label.text().replace("<br>", "\n")))
