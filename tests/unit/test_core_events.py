"""The Core's event log: every state change of a job, operator and export, in commit order."""

from __future__ import annotations

from pathlib import Path

import pytest

from clara_ray.contracts.records import EventRecord, JobRecord
from clara_ray.core import CoreService, SQLiteStore
from tests.unit.core_env import (
    OPERATORS,
    Env,
    finish_operators,
    queue,
    with_export_manifest,
)


def changes(events: list[EventRecord]) -> list[tuple[str, str, str, str | None]]:
    return [(e.kind, e.subject, e.state, e.status) for e in events]


def test_a_job_s_life_is_logged_in_order_once_per_change(env: Env) -> None:
    core = env.core
    queue(core, "j1")
    finish_operators(core, "j1")
    with_export_manifest(env, "j1")
    core.update_metadata("j1", {"ward": "4"})  # no state change: no event
    core.job_stopped("j1", "Healthy")
    events = core.events.list_events()
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    assert len({e.event_id for e in events}) == len(events)
    jobs = [(e.state, e.status) for e in events if e.kind == "job"]
    assert jobs == [("Pending", "Healthy"), ("Running", "Healthy"), ("Stopped", "Healthy")]
    for op in OPERATORS:
        mine = [(e.state, e.status) for e in events if e.kind == "operator" and e.subject == op]
        assert mine[0] == ("Pending", "Healthy") and mine[-1] == ("Stopped", "Healthy")
        assert ("Running", "Healthy") in mine
    (export,) = [e for e in events if e.kind == "export"]
    assert (export.state, export.detail["destination"]) == ("Pending", "PACS")
    assert events[-1].kind == "job" and events[-1].state == "Stopped"
    assert all(e.job_id == "j1" for e in events)
    assert {e.detail["pipeline"] for e in events if e.kind == "job"} == {"diamond"}


def test_events_resume_after_an_id_and_page_by_limit(env: Env) -> None:
    core = env.core
    queue(core, "j1")
    first = core.events.list_events()
    latest = core.events.latest_event_id()
    assert latest == first[-1].event_id
    core.cancel_job("j1")
    newer = core.events.list_events(after=latest)
    assert newer and all(e.event_id > latest for e in newer)
    assert ("job", "j1", "Stopped", "Canceled") in [
        (e.kind, e.job_id, e.state, e.status) for e in newer
    ]
    assert core.events.list_events(after=latest, limit=1) == newer[:1]
    with pytest.raises(ValueError, match="limit must be between 1 and 10000, got 0"):
        core.events.list_events(limit=0)


def test_a_rolled_back_change_leaves_no_event(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    job = JobRecord("j", "j", "p", "def", "pay")
    with pytest.raises(RuntimeError), store.transaction():
        store.put_job(job)
        raise RuntimeError("the unit of work fails")
    assert store.list_events() == [] and store.latest_event_id() == 0
    store.put_job(job)
    assert changes(store.list_events()) == [("job", "j", "Pending", "Healthy")]
    store.close()


def test_pruning_keeps_the_newest_and_ids_never_go_back(env: Env) -> None:
    core = env.core
    for n in range(3):
        queue(core, f"j{n}")
    latest = core.events.latest_event_id()
    assert core.store.prune_events(keep=2) == latest - 2
    assert [e.event_id for e in core.events.list_events()] == [latest - 1, latest]
    restarted: CoreService = env.restart()
    assert restarted.events.latest_event_id() == latest
    restarted.cancel_job("j0")
    assert restarted.events.list_events()[-1].event_id > latest


def test_jobs_are_filtered_by_status_and_creation_time(env: Env) -> None:
    core = env.core
    queue(core, "j1")
    core.cancel_job("j1")
    queue(core, "j2")
    created = core.get_job("j2").created_at
    assert [j.job_id for j in core.list_jobs(status="canceled")] == ["j1"]
    assert [j.job_id for j in core.list_jobs(since=created)] == ["j2"]
    assert [j.job_id for j in core.list_jobs(state="Running", status="Healthy")] == ["j2"]
    with pytest.raises(ValueError, match="status 'fine' is not one of"):
        core.list_jobs(status="fine")
