"""The log of state changes: read side of what the store's triggers journal."""

from __future__ import annotations

from clara_ray.contracts.records import EventRecord
from clara_ray.core.store import Store

__all__ = ["EventLog"]

MAX_PAGE = 10_000


class EventLog:
    """Every job, operator and export state change in commit order; the Core's event verbs."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list_events(self, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """State changes after event ``after``, oldest first, at most ``limit`` (1 to 10000)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        return self.store.list_events(after, limit)

    def latest_event_id(self) -> int:
        return self.store.latest_event_id()
