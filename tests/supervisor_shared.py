"""What tests/core/train/test_supervisor.py and tests/slow/test_supervisor_e2e.py share (their helpers and fixtures, written once)."""

from __future__ import annotations
from studio.core.train import supervisor as supervisor_module


class Record:
    """The callbacks, recording what a supervisor reported."""

    def __init__(self):
        self.events: list[dict] = []
        self.endings: list[tuple[str, str]] = []

    def on_event(self, event: dict) -> None:
        self.events.append(event)

    def on_ended(self, status: str, message: str) -> None:
        self.endings.append((status, message))

    @property
    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]
