"""The run being set up: the one RunConfig that the Dataset and Config tabs both edit, with change notification.

Every shared field (the data file and how it is read, the eval split, the model, max_length, the seed...)
lives here once. A tab writes an edit with `update(section, source=self, field=value)` and re-renders when a
listener call says a field it shows has changed; a change whose `source` is the tab itself is its own edit,
which it has already shown. Writing a value a field already holds notifies nobody, so a tab that writes back
what a notification showed it cannot start a loop; a change made by a listener is delivered after the current
one has reached every listener, never in the middle of it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from studio.core.config.settings import SECTIONS, RunConfig, copy_config


@dataclass(frozen=True)
class Change:
    """What changed in the draft: one section's fields, or (`section` None) the whole config."""

    section: str | None
    names: frozenset[str] = frozenset()
    source: object | None = None
    """Who made the change (a tab passes itself), None for a new config from outside."""

    def touches(self, section: str, *names: str) -> bool:
        """Whether `section` may have changed: any of `names` (any field of it when none are given)."""
        if self.section is None:
            return True
        return self.section == section and (not names or not self.names.isdisjoint(names))


Listener = Callable[[Change], None]


class RunDraft:
    """The current RunConfig and the listeners told about each change to it."""

    def __init__(self, config: RunConfig | None = None):
        self._config = copy_config(config) if config is not None else RunConfig()
        self._listeners: list[Listener] = []
        self._pending: deque[Change] = deque()
        self._delivering = False

    @property
    def config(self) -> RunConfig:
        """The config itself (not a copy). Writing to it directly notifies nobody: edits go through `update`."""
        return self._config

    def snapshot(self) -> RunConfig:
        """A copy to hand to a run or a file, which later edits do not reach."""
        return copy_config(self._config)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(change)` after every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def set_config(self, config: RunConfig, *, source: object | None = None) -> None:
        """Hold a copy of `config` from now on (an opened file, a run's settings) and tell every listener."""
        self._config = copy_config(config)
        self._notify(Change(None, source=source))

    def rename(self, name: str, *, source: object | None = None) -> Change | None:
        """Set the run's name (the one field outside a section); notifies as a change of section "name"."""
        if self._config.name == name:
            return None
        self._config.name = name
        change = Change("name", frozenset({"name"}), source)
        self._notify(change)
        return change

    def update(self, section: str, *, source: object | None = None, **values: Any) -> Change | None:
        """Set fields of one section; notifies once with the fields whose value changed, or not at all."""
        if section not in SECTIONS:
            raise KeyError(f"unknown config section {section!r} (known: {', '.join(SECTIONS)})")
        settings = getattr(self._config, section)
        known = {f.name for f in dataclasses.fields(settings)}
        changed = set()
        for name, value in values.items():
            if name not in known:
                raise KeyError(f"{section}.{name}: no such setting")
            if getattr(settings, name) != value:
                setattr(settings, name, copy.deepcopy(value))  # a list the caller keeps editing is not shared
                changed.add(name)
        if not changed:
            return None
        change = Change(section, frozenset(changed), source)
        self._notify(change)
        return change

    def _notify(self, change: Change) -> None:
        self._pending.append(change)
        if self._delivering:
            return  # a listener changed the draft: delivered once this change has reached everyone
        self._delivering = True
        try:
            while self._pending:
                current = self._pending.popleft()
                for listener in list(self._listeners):
                    listener(current)
        finally:
            self._delivering = False
            self._pending.clear()
