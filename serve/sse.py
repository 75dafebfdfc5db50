"""Server-Sent Events of the Core's event log (``GET /api/v1/events``).

The Core journals every state change of a job, an operator and an export with
an id that grows by one per change (:class:`~clara_ray.contracts.records.EventRecord`).
The stream sends each as ``id:`` / ``event:`` (the kind: ``job``, ``operator``,
``export``) / ``data:`` (the record as JSON), so a browser's ``EventSource``
reconnects with ``Last-Event-ID`` and misses nothing.

- A stream begins after ``Last-Event-ID`` (a reconnect), else after ``after``
  (a client that read its lists at a known event), else at the newest event.
  Its first message, ``event: ready``, carries the id it starts after; a client
  that opened the stream first and then read its lists misses no change.
- When the events a client asks for were dropped (``core.event_retention``), the
  stream says so first with ``event: reset``: the client reads its lists again.
- A comment line is sent every ``heartbeat`` seconds without events, so proxies
  and load balancers keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from clara_ray.contracts.records import EventRecord

__all__ = ["HEADERS", "event_stream", "format_event", "parse_event_id"]

HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx (and ingress-nginx) would otherwise buffer the stream
    "Connection": "keep-alive",
}
"""Response headers of the stream besides its ``text/event-stream`` media type."""

_PAGE = 1000

Fetch = Callable[[int, int], Awaitable[list[EventRecord]]]
"""The Core's ``list_events(after, limit)``, awaited."""


def parse_event_id(value: str | None, what: str) -> int | None:
    """An event id from a header or parameter; ``ValueError`` naming ``what`` if malformed."""
    if value is None or value.strip() == "":
        return None
    try:
        parsed = int(value.strip())
    except ValueError:
        parsed = -1
    if parsed < 0:
        raise ValueError(f"{what} must be a non-negative event id, got {value!r}")
    return parsed


def _message(event: str, data: object, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def format_event(record: EventRecord) -> str:
    """One event as an SSE message."""
    return _message(record.kind, record.to_dict(), record.event_id)


async def event_stream(
    fetch: Fetch,
    start_after: int,
    *,
    disconnected: Callable[[], Awaitable[bool]],
    poll_seconds: float = 0.5,
    heartbeat_seconds: float = 15.0,
) -> AsyncIterator[str]:
    """The SSE messages of every event after ``start_after``, until the client goes."""
    after = start_after
    yield f"retry: 2000\n{_message('ready', {'after': after}, after)}"
    first = True
    quiet = 0.0
    while not await disconnected():
        events = await fetch(after, _PAGE)
        if first and events and after and events[0].event_id > after + 1:
            dropped = {"after": after, "first_kept": events[0].event_id}
            yield _message("reset", {"reason": "older events were dropped", **dropped})
        first = False
        for record in events:
            yield format_event(record)
            after = record.event_id
        if len(events) == _PAGE:
            continue
        if events:
            quiet = 0.0
        elif quiet >= heartbeat_seconds:
            yield ": heartbeat\n\n"
            quiet = 0.0
        await asyncio.sleep(poll_seconds)
        quiet += poll_seconds
