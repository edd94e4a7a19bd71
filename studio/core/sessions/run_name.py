"""The run's name as the Training tab shows it: one the user typed, or a default that follows the data and model.

A name typed in the Name field is the user's and stays. A name that came with a config (an opened file, the demo's
"demo") is kept while the data and model are that config's; once either changes it gives way to the default, the
data's and the model's names — a run on Turkish call-centre data is not "demo-2".
"""

from __future__ import annotations

from studio.core.runs.store import default_run_name
from studio.core.sessions.draft import Change, RunDraft


class RunNaming:
    """Observes the draft: clears a name that did not come from the user when the data or the model changes."""

    def __init__(self, draft: RunDraft):
        self.draft = draft
        self._typed = ""  # the name the user typed, "" when none
        draft.subscribe(self._on_change)

    @property
    def typed(self) -> bool:
        """Whether the draft's name is one the user typed (a config opened since brings its own)."""
        return bool(self._typed) and self.draft.config.name == self._typed

    def _on_change(self, change: Change) -> None:
        if change.source is self or change.section is None or self.typed or not self.draft.config.name:
            return  # a new config keeps the name it came with
        if change.touches("data", "train_file") or change.touches("model", "name_or_path"):
            self.draft.rename("", source=self)

    def type(self, text: str) -> None:
        """The user's name (an empty field gives the name back to the default)."""
        self._typed = text.strip()
        self.draft.rename(self._typed, source=self)

    @property
    def name(self) -> str:
        """The name the field shows: the chosen one, or "" while the default applies."""
        return self.draft.config.name

    @property
    def default(self) -> str:
        return default_run_name(self.draft.config.data.train_file, self.draft.config.model.name_or_path)

    def for_start(self) -> str:
        """The name a run started now asks for (the store adds a suffix when it is in use)."""
        return self.name or self.default
