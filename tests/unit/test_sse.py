"""The event stream's messages, resumption, gap notice and heartbeat (no Ray, no server)."""

from __future__ import annotations

import asyncio
import json

import pytest

from clara_ray.contracts.records import EventRecord
from serve.sse import event_stream, parse_event_id


def record(event_id: int) -> EventRecord:
    return EventRecord(event_id, 1.0, "job", f"j{event_id}", "name", "Running", "Healthy")


class Log:
    """An event log holding ``ids``; the client goes after ``polls`` fetches."""

    def __init__(self, ids: list[int], polls: int) -> None:
        self.ids, self.polls, self.asked = ids, polls, []

    async def fetch(self, after: int, limit: int) -> list[EventRecord]:
        self.asked.append(after)
        return [record(i) for i in self.ids if i > after][:limit]

    async def disconnected(self) -> bool:
        return len(self.asked) >= self.polls


def messages(log: Log, after: int, **kwargs: float) -> list[str]:
    async def collect() -> list[str]:
        stream = event_stream(log.fetch, after, disconnected=log.disconnected, **kwargs)
        return [m async for m in stream]

    return asyncio.run(collect())


def fields(message: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in message.strip().splitlines() if ": " in line)


def test_every_event_after_the_start_once_in_order_with_its_id() -> None:
    log = Log([3, 4, 5, 6], polls=2)
    sent = messages(log, 4, poll_seconds=0.001)
    assert sent[0].startswith("retry: 2000\n")
    assert fields(sent[0])["event"] == "ready" and fields(sent[0])["id"] == "4"
    events = [fields(m) for m in sent[1:]]
    assert [e["id"] for e in events] == ["5", "6"]
    assert [json.loads(e["data"])["event_id"] for e in events] == [5, 6]
    assert {e["event"] for e in events} == {"job"}
    assert log.asked == [4, 6]  # the second poll asks after the last event sent


def test_a_start_before_the_oldest_kept_event_says_reset_first() -> None:
    sent = messages(Log([10, 11], polls=1), 3, poll_seconds=0.001)
    reset = fields(sent[1])
    assert reset["event"] == "reset"
    assert json.loads(reset["data"]) == {
        "reason": "older events were dropped",
        "after": 3,
        "first_kept": 10,
    }
    assert [fields(m)["id"] for m in sent[2:]] == ["10", "11"]


def test_contiguous_events_and_a_start_from_the_beginning_need_no_reset() -> None:
    for after, ids in ((9, [10, 11]), (0, [10, 11])):
        sent = messages(Log(ids, polls=1), after, poll_seconds=0.001)
        assert "reset" not in {fields(m).get("event") for m in sent}


def test_a_quiet_stream_sends_heartbeat_comments() -> None:
    sent = messages(Log([], polls=6), 0, poll_seconds=0.001, heartbeat_seconds=0.002)
    assert ": heartbeat\n\n" in sent


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_a_malformed_event_id_names_where_it_came_from(value: str) -> None:
    with pytest.raises(ValueError, match="Last-Event-ID must be a non-negative event id"):
        parse_event_id(value, "Last-Event-ID")


def test_an_absent_event_id_is_none() -> None:
    assert parse_event_id(None, "after") is None and parse_event_id(" ", "after") is None
    assert parse_event_id("42", "after") == 42
