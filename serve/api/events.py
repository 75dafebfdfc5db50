"""``GET /api/v1/events``: the Core's event log as Server-Sent Events (see :mod:`serve.sse`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.records import EventRecord
from serve.api.context import Context
from serve.sse import HEADERS, event_stream, parse_event_id

__all__ = ["router"]

router = APIRouter(tags=["events"])


@router.get("/api/v1/events", response_class=StreamingResponse)
async def events(
    request: Request,
    ctx: Context,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Every job, operator and export state change as it happens (``text/event-stream``).

    A reconnecting client sends ``Last-Event-ID`` and gets every event it missed;
    ``after`` starts after a known event id; without either the stream starts now.
    """
    start = parse_event_id(last_event_id, "Last-Event-ID")
    if start is None:
        start = parse_event_id(after, "query parameter 'after'")
    if start is None:
        start = await ctx.core(CoreClient.latest_event_id)

    async def fetch(after_id: int, limit: int) -> list[EventRecord]:
        return await ctx.core(CoreClient.list_events, after_id, limit)

    stream = event_stream(fetch, start, disconnected=request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)
