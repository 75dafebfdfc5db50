"""The Core's SQLite schema: its tables, and the triggers that journal state changes."""

from __future__ import annotations

__all__ = ["SCHEMA"]

_TABLES = """
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL, definition TEXT NOT NULL,
    source TEXT NOT NULL, version INTEGER NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS payloads (
    payload_id TEXT PRIMARY KEY, name TEXT UNIQUE, files INTEGER NOT NULL, bytes INTEGER NOT NULL,
    created_at REAL NOT NULL, source TEXT, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    pipeline TEXT NOT NULL, definition TEXT NOT NULL, payload_id TEXT NOT NULL,
    priority TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    parameters TEXT NOT NULL, metadata TEXT NOT NULL, warnings TEXT NOT NULL,
    runtime_env TEXT NOT NULL, created_at REAL NOT NULL, queued_at REAL, started_at REAL, ended_at REAL,
    exports_created INTEGER NOT NULL DEFAULT 0, run INTEGER NOT NULL DEFAULT 0,
    demand TEXT NOT NULL DEFAULT '{}', evictions TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS operators (
    job_id TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, started_at REAL, ended_at REAL, node_id TEXT, node_ip TEXT,
    gpu_ids TEXT NOT NULL, message TEXT, PRIMARY KEY (job_id, name));
CREATE TABLE IF NOT EXISTS dicom_entries (
    kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS exports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, export_id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    operator TEXT NOT NULL, destination TEXT NOT NULL, files TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, reason TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL, lease_until REAL, sent INTEGER NOT NULL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS exports_job ON exports(job_id);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    job_id TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL, status TEXT,
    detail TEXT NOT NULL);
"""


def _event_triggers() -> str:
    """Triggers that journal every state change of a job, an operator or an export into
    ``events`` in the transaction that makes it: the log misses none and holds them in
    commit order."""
    now = "(julianday('now') - 2440587.5) * 86400.0"
    journaled = (  # table, kind, subject, status, watched columns, detail
        ("jobs", "job", "name", "NEW.status", ("state", "status"),
         "'pipeline', NEW.pipeline, 'priority', NEW.priority, 'reason', NEW.reason"),
        ("operators", "operator", "name", "NEW.status", ("state", "status", "attempts"),
         "'attempts', NEW.attempts, 'node_ip', NEW.node_ip, 'message', NEW.message"),
        ("exports", "export", "export_id", "NULL", ("state", "attempts"),
         "'destination', NEW.destination, 'attempts', NEW.attempts, 'sent', NEW.sent, "
         "'reason', NEW.reason"),
    )  # fmt: skip
    sql = []
    for table, kind, subject, status, watched, detail in journaled:
        insert = (
            f"INSERT INTO events (at, kind, job_id, subject, state, status, detail) VALUES "
            f"({now}, '{kind}', NEW.job_id, NEW.{subject}, NEW.state, {status}, "
            f"json_object({detail}));"
        )
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in watched)
        sql.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_inserted AFTER INSERT ON {table} "
            f"BEGIN {insert} END;\n"
            f"CREATE TRIGGER IF NOT EXISTS {table}_changed AFTER UPDATE OF {', '.join(watched)} "
            f"ON {table} WHEN {changed} BEGIN {insert} END;\n"
        )
    return "".join(sql)


SCHEMA = _TABLES + _event_triggers()
"""What :class:`~clara_ray.core.store.SQLiteStore` creates when absent (idempotent)."""
