"""Persistence of Core's records behind a small interface; SQLite is the embedded default.

Every write is one transaction, committed (WAL, ``synchronous=FULL``) before
the method returns, so a Core that answered has persisted.  A transition that
writes several rows (a job and its operators, a job and its exports) runs in
a unit of work, :meth:`Store.transaction`: all of its writes commit together
or none does.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from clara_ray.contracts.records import (
    EventRecord,
    ExportRecord,
    ExportState,
    JobPriority,
    JobRecord,
    JobState,
    JobStatus,
    OperatorRecord,
    PayloadRecord,
    PipelineRecord,
)
from clara_ray.core.schema import SCHEMA

__all__ = ["SQLiteStore", "Store"]


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[None]:
        """A unit of work: the writes made inside commit together when it exits normally and
        are rolled back when it exits with an exception. Nested use joins the outer one."""
        ...

    def put_pipeline(self, rec: PipelineRecord) -> None: ...
    def get_pipeline(self, name: str) -> PipelineRecord | None: ...
    def list_pipelines(self) -> list[PipelineRecord]: ...
    def delete_pipeline(self, name: str) -> bool: ...
    def put_payload(self, rec: PayloadRecord) -> None: ...
    def get_payload(self, payload_id: str) -> PayloadRecord | None: ...
    def find_payload_by_name(self, name: str) -> PayloadRecord | None: ...
    def list_payloads(self) -> list[PayloadRecord]: ...
    def delete_payload(self, payload_id: str) -> bool: ...
    def put_job(self, rec: JobRecord) -> None: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def list_jobs(
        self, state: JobState | None = None, pipeline: str | None = None
    ) -> list[JobRecord]: ...
    def list_jobs_lacking_exports(self) -> list[JobRecord]: ...
    def put_operator(self, rec: OperatorRecord) -> None: ...
    def list_operators(self, job_id: str) -> list[OperatorRecord]: ...
    def put_dicom_entry(self, kind: str, key: str, body: dict[str, Any]) -> None: ...
    def delete_dicom_entry(self, kind: str, key: str) -> bool: ...
    def list_dicom_entries(self) -> list[tuple[str, dict[str, Any]]]: ...
    def put_export(self, rec: ExportRecord) -> None: ...
    def get_export(self, export_id: str) -> ExportRecord | None: ...
    def list_exports(
        self, job_id: str | None = None, states: tuple[str, ...] | None = None
    ) -> list[ExportRecord]: ...
    def list_events(self, after: int = 0, limit: int = 1000) -> list[EventRecord]: ...
    def latest_event_id(self) -> int: ...
    def prune_events(self, keep: int) -> int:
        """Drop all but the newest ``keep`` events; how many were dropped."""
        ...

    def close(self) -> None: ...


_JOB_COLUMNS = (
    "job_id",
    "name",
    "pipeline",
    "definition",
    "payload_id",
    "priority",
    "state",
    "status",
    "reason",
    "parameters",
    "metadata",
    "warnings",
    "runtime_env",
    "created_at",
    "queued_at",
    "started_at",
    "ended_at",
    "exports_created",
    "run",
    "demand",
    "evictions",
)
_JSON_JOB_COLUMNS = ("parameters", "metadata", "warnings", "runtime_env", "demand", "evictions")
_ADDED_JOB_COLUMNS = {  # columns added after the first release, with their definitions
    "run": "INTEGER NOT NULL DEFAULT 0",
    "demand": "TEXT NOT NULL DEFAULT '{}'",
    "evictions": "TEXT NOT NULL DEFAULT '[]'",
}
_EXPORT_COLUMNS = (
    "export_id",
    "job_id",
    "operator",
    "destination",
    "files",
    "state",
    "attempts",
    "reason",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "lease_until",
    "sent",
    "details",
)
_OP_COLUMNS = (
    "job_id",
    "name",
    "state",
    "status",
    "attempts",
    "started_at",
    "ended_at",
    "node_id",
    "node_ip",
    "gpu_ids",
    "message",
)


class SQLiteStore:
    """The embedded store: one SQLite file, safe across process kills."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()  # held by a unit of work from its start to its end
        self._depth = 0  # nesting of the unit of work the lock's holder is in
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._db.executescript(SCHEMA)

    def _migrate(self) -> None:
        """Bring a database written by an earlier version up to this schema.

        ``jobs.exports_created`` (added later) marks the Healthy jobs whose exports
        are recorded; in an older database it is set for the jobs that have export
        records, so that the Core derives the exports of the others once.
        """
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        if not columns:
            return
        with self.transaction():
            if "exports_created" not in columns:
                self._db.execute(
                    "ALTER TABLE jobs ADD COLUMN exports_created INTEGER NOT NULL DEFAULT 0"
                )
                self._db.execute(
                    "UPDATE jobs SET exports_created=1 WHERE job_id IN (SELECT job_id FROM exports)"
                )
            for name, definition in _ADDED_JOB_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:  # not under another thread's statement
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` around the block (``ROLLBACK`` on any
        exception); other threads' calls wait until it ends. Nested use joins it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self.transaction():
            return self._db.execute(sql, params).rowcount

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- pipelines -------------------------------------------------------------
    def put_pipeline(self, rec: PipelineRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO pipelines VALUES (?,?,?,?,?,?,?,?)",
            (
                rec.name,
                rec.pipeline_id,
                rec.definition,
                rec.source,
                rec.version,
                rec.created_at,
                rec.updated_at,
                rec.description,
            ),
        )

    def get_pipeline(self, name: str) -> PipelineRecord | None:
        rows = self._read("SELECT * FROM pipelines WHERE name=? OR pipeline_id=?", (name, name))
        return PipelineRecord(**dict(rows[0])) if rows else None

    def list_pipelines(self) -> list[PipelineRecord]:
        return [
            PipelineRecord(**dict(r)) for r in self._read("SELECT * FROM pipelines ORDER BY name")
        ]

    def delete_pipeline(self, name: str) -> bool:
        return self._write("DELETE FROM pipelines WHERE name=?", (name,)) > 0

    # -- payloads --------------------------------------------------------------
    def put_payload(self, rec: PayloadRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO payloads VALUES (?,?,?,?,?,?,?)",
            (
                rec.payload_id,
                rec.name,
                rec.files,
                rec.bytes,
                rec.created_at,
                rec.source,
                json.dumps(rec.metadata),
            ),
        )

    @staticmethod
    def _payload(row: sqlite3.Row) -> PayloadRecord:
        d = dict(row)
        d["metadata"] = json.loads(d["metadata"])
        return PayloadRecord(**d)

    def get_payload(self, payload_id: str) -> PayloadRecord | None:
        rows = self._read("SELECT * FROM payloads WHERE payload_id=?", (payload_id,))
        return self._payload(rows[0]) if rows else None

    def find_payload_by_name(self, name: str) -> PayloadRecord | None:
        rows = self._read("SELECT * FROM payloads WHERE name=?", (name,))
        return self._payload(rows[0]) if rows else None

    def list_payloads(self) -> list[PayloadRecord]:
        return [self._payload(r) for r in self._read("SELECT * FROM payloads ORDER BY created_at")]

    def delete_payload(self, payload_id: str) -> bool:
        return self._write("DELETE FROM payloads WHERE payload_id=?", (payload_id,)) > 0

    # -- jobs ------------------------------------------------------------------
    def put_job(self, rec: JobRecord) -> None:
        values = (
            rec.job_id,
            rec.name,
            rec.pipeline,
            rec.definition,
            rec.payload_id,
            str(rec.priority),
            str(rec.state),
            str(rec.status),
            rec.reason,
            json.dumps(rec.parameters),
            json.dumps(rec.metadata),
            json.dumps(rec.warnings),
            json.dumps(rec.runtime_env),
            rec.created_at,
            rec.queued_at,
            rec.started_at,
            rec.ended_at,
            int(rec.exports_created),
            rec.run,
            json.dumps(rec.demand),
            json.dumps(rec.evictions),
        )
        cols = ", ".join(_JOB_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in _JOB_COLUMNS[1:])
        self._write(
            f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(values))}) "
            f"ON CONFLICT(job_id) DO UPDATE SET {updates}",
            values,
        )

    @staticmethod
    def _job(row: sqlite3.Row) -> JobRecord:
        d = {k: row[k] for k in _JOB_COLUMNS}
        for k in _JSON_JOB_COLUMNS:
            d[k] = json.loads(d[k])
        d["priority"] = JobPriority(d["priority"])
        d["state"] = JobState(d["state"])
        d["status"] = JobStatus(d["status"])
        d["exports_created"] = bool(d["exports_created"])
        return JobRecord(**d)

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        return self._job(rows[0]) if rows else None

    def list_jobs(
        self, state: JobState | None = None, pipeline: str | None = None
    ) -> list[JobRecord]:
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if state is not None:
            sql += " AND state=?"
            params.append(str(state))
        if pipeline is not None:
            sql += " AND pipeline=?"
            params.append(pipeline)
        return [self._job(r) for r in self._read(sql + " ORDER BY seq", tuple(params))]

    def list_jobs_lacking_exports(self) -> list[JobRecord]:
        """Jobs stopped Healthy whose exports have not been derived from their results."""
        rows = self._read(
            "SELECT * FROM jobs WHERE state=? AND status=? AND exports_created=0 ORDER BY seq",
            (str(JobState.STOPPED), str(JobStatus.HEALTHY)),
        )
        return [self._job(r) for r in rows]

    # -- operators -------------------------------------------------------------
    def put_operator(self, rec: OperatorRecord) -> None:
        values = (
            rec.job_id,
            rec.name,
            str(rec.state),
            str(rec.status),
            rec.attempts,
            rec.started_at,
            rec.ended_at,
            rec.node_id,
            rec.node_ip,
            json.dumps(rec.gpu_ids),
            rec.message,
        )
        updates = ", ".join(f"{c}=excluded.{c}" for c in _OP_COLUMNS[2:])
        self._write(
            f"INSERT INTO operators ({', '.join(_OP_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(values))}) "
            f"ON CONFLICT(job_id, name) DO UPDATE SET {updates}",
            values,
        )

    def list_operators(self, job_id: str) -> list[OperatorRecord]:
        rows = self._read("SELECT * FROM operators WHERE job_id=? ORDER BY rowid", (job_id,))
        out = []
        for r in rows:
            d = {k: r[k] for k in _OP_COLUMNS}
            d["gpu_ids"] = json.loads(d["gpu_ids"])
            d["state"] = JobState(d["state"])
            d["status"] = JobStatus(d["status"])
            out.append(OperatorRecord(**d))
        return out

    # -- DICOM configuration ---------------------------------------------------
    def put_dicom_entry(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO dicom_entries VALUES (?,?,?) "
            "ON CONFLICT(kind, key) DO UPDATE SET body=excluded.body",
            (kind, key, json.dumps(body)),
        )

    def delete_dicom_entry(self, kind: str, key: str) -> bool:
        return self._write("DELETE FROM dicom_entries WHERE kind=? AND key=?", (kind, key)) > 0

    def list_dicom_entries(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self._read("SELECT kind, body FROM dicom_entries ORDER BY kind, key")
        return [(r["kind"], json.loads(r["body"])) for r in rows]

    # -- exports ---------------------------------------------------------------
    def put_export(self, rec: ExportRecord) -> None:
        values = (
            rec.export_id,
            rec.job_id,
            rec.operator,
            rec.destination,
            json.dumps(rec.files),
            str(rec.state),
            rec.attempts,
            rec.reason,
            rec.created_at,
            rec.updated_at,
            rec.next_attempt_at,
            rec.lease_until,
            rec.sent,
            json.dumps(rec.details),
        )
        updates = ", ".join(f"{c}=excluded.{c}" for c in _EXPORT_COLUMNS[1:])
        self._write(
            f"INSERT INTO exports ({', '.join(_EXPORT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(values))}) ON CONFLICT(export_id) DO UPDATE SET {updates}",
            values,
        )

    @staticmethod
    def _export(row: sqlite3.Row) -> ExportRecord:
        d = {k: row[k] for k in _EXPORT_COLUMNS}
        d["files"] = json.loads(d["files"])
        d["details"] = json.loads(d["details"])
        d["state"] = ExportState(d["state"])
        return ExportRecord(**d)

    def get_export(self, export_id: str) -> ExportRecord | None:
        rows = self._read("SELECT * FROM exports WHERE export_id=?", (export_id,))
        return self._export(rows[0]) if rows else None

    def list_exports(
        self, job_id: str | None = None, states: tuple[str, ...] | None = None
    ) -> list[ExportRecord]:
        sql, params = "SELECT * FROM exports WHERE 1=1", []
        if job_id is not None:
            sql += " AND job_id=?"
            params.append(job_id)
        if states:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            params.extend(states)
        return [self._export(r) for r in self._read(sql + " ORDER BY seq", tuple(params))]

    # -- events ----------------------------------------------------------------
    def list_events(self, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        rows = self._read(
            "SELECT * FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?", (after, limit)
        )
        return [EventRecord(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    def latest_event_id(self) -> int:
        """The newest event's id (0 when none); it never goes back, pruned or not."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name='events'")
        return int(rows[0]["seq"]) if rows else 0

    def prune_events(self, keep: int) -> int:
        return self._write(
            "DELETE FROM events WHERE event_id <= (SELECT MAX(event_id) FROM events) - ?",
            (keep,),
        )
