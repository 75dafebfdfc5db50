"""Tests of clara_ray.core.store's unit of work and schema migration (no Ray)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from clara_ray.contracts.records import ExportRecord, JobRecord, JobState, JobStatus, OperatorRecord
from clara_ray.core import SQLiteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "clara.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db)
    yield s
    s.close()


@pytest.fixture
def other(db: Path, store: SQLiteStore) -> Iterator[SQLiteStore]:
    """A second connection to the same file: what another process would see."""
    s = SQLiteStore(db)
    yield s
    s.close()


def job(job_id: str = "j1", **fields: object) -> JobRecord:
    return JobRecord(job_id, "n", "p", "def", "pay", **fields)  # type: ignore[arg-type]


def test_writes_outside_a_unit_of_work_commit_at_once(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    store.put_job(job())
    assert other.get_job("j1") == job()


def test_unit_of_work_commits_all_its_writes_together(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    with store.transaction():
        store.put_job(job())
        store.put_operator(OperatorRecord("j1", "a"))
        assert store.get_job("j1") == job()  # its own writes are visible inside
        assert other.get_job("j1") is None  # nobody else's, until it commits
    assert other.get_job("j1") == job()
    assert other.list_operators("j1") == [OperatorRecord("j1", "a")]


def test_unit_of_work_rolls_back_every_write_on_an_exception(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    store.put_job(job(state=JobState.RUNNING))
    with pytest.raises(OSError, match="listing failed"), store.transaction():
        store.put_job(job(state=JobState.STOPPED))
        store.put_operator(OperatorRecord("j1", "a", state=JobState.STOPPED))
        raise OSError("listing failed")
    for s in (store, other):
        got = s.get_job("j1")
        assert got is not None and got.state is JobState.RUNNING
        assert s.list_operators("j1") == []
    store.put_job(job(state=JobState.STOPPED))  # the store is usable afterwards
    got = other.get_job("j1")
    assert got is not None and got.state is JobState.STOPPED


def test_nested_unit_of_work_joins_the_outer_one(store: SQLiteStore, other: SQLiteStore) -> None:
    with pytest.raises(RuntimeError, match="later"), store.transaction():
        with store.transaction():
            store.put_job(job())
        assert other.get_job("j1") is None  # the inner one did not commit on its own
        raise RuntimeError("later")
    assert store.get_job("j1") is None and other.get_job("j1") is None


OLD_JOBS = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    pipeline TEXT NOT NULL, definition TEXT NOT NULL, payload_id TEXT NOT NULL,
    priority TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    parameters TEXT NOT NULL, metadata TEXT NOT NULL, warnings TEXT NOT NULL,
    runtime_env TEXT NOT NULL, created_at REAL NOT NULL, queued_at REAL, started_at REAL,
    ended_at REAL);
CREATE TABLE exports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, export_id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    operator TEXT NOT NULL, destination TEXT NOT NULL, files TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, reason TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL, lease_until REAL, sent INTEGER NOT NULL, details TEXT NOT NULL);
"""


def test_database_of_an_earlier_version_is_migrated(db: Path) -> None:
    """Its Healthy jobs with export records are marked; the others are left for recovery."""
    db.parent.mkdir(parents=True)
    old = sqlite3.connect(db)
    old.executescript(OLD_JOBS)
    for job_id in ("with-exports", "without-exports"):
        old.execute(
            "INSERT INTO jobs (job_id, name, pipeline, definition, payload_id, priority, state, "
            "status, parameters, metadata, warnings, runtime_env, created_at) "
            "VALUES (?, 'n', 'p', 'd', 'pay', 'normal', 'Stopped', 'Healthy', '{}', '{}', '[]', "
            "'{}', 1.0)",
            (job_id,),
        )
    old.execute(
        "INSERT INTO exports VALUES (1, 'e1', 'with-exports', 'op', 'PACS', '[]', 'Succeeded', "
        "1, NULL, 1.0, 1.0, 1.0, NULL, 0, '{}')"
    )
    old.commit()
    old.close()
    store = SQLiteStore(db)
    try:
        marked = store.get_job("with-exports")
        assert marked is not None and marked.exports_created
        assert (marked.run, marked.demand, marked.evictions) == (0, {}, [])
        assert [j.job_id for j in store.list_jobs_lacking_exports()] == ["without-exports"]
        assert [e.export_id for e in store.list_exports()] == ["e1"]
    finally:
        store.close()
    SQLiteStore(db).close()  # opening a migrated database again changes nothing


def test_jobs_lacking_exports_are_only_healthy_stopped_unmarked_ones(store: SQLiteStore) -> None:
    store.put_job(job("running", state=JobState.RUNNING))
    store.put_job(job("faulted", state=JobState.STOPPED, status=JobStatus.FAULTED))
    store.put_job(job("done", state=JobState.STOPPED, exports_created=True))
    store.put_job(job("lacking", state=JobState.STOPPED))
    store.put_export(ExportRecord("e", "done", "op", "PACS", ["a.dcm"]))
    assert [j.job_id for j in store.list_jobs_lacking_exports()] == ["lacking"]
