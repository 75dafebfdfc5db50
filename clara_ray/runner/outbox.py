"""Reports a job runner could not deliver to the Core, kept on disk until it takes them.

A runner that cannot reach the Core (restarting, overloaded, or raising on a
transient storage error) keeps the report here instead of dropping it, and so
does every later report of the same job, so that the Core gets a job's
reports in the order they were made.  The runner host delivers them in the
background and again after its own restart.  While a job's final report
(``job_stopped``) is held here, the host counts the job as its own, so the Core
never mistakes a finished job for one whose runner was lost.

The outbox is one SQLite file (WAL, ``synchronous=FULL``): a report is on disk
before the runner moves on.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from clara_ray.contracts.core_client import CoreClient
from clara_ray.errors import ClaraError

__all__ = ["Report", "ReportOutbox"]

log = logging.getLogger(__name__)


class Report(str, Enum):
    """A runner's report to the Core; its value, the Core verb, is what the outbox keeps."""

    OPERATOR_STARTED = "operator_started"
    OPERATOR_STOPPED = "operator_stopped"
    JOB_WARNING = "job_warning"
    JOB_STOPPED = "job_stopped"  # the final report

    @classmethod
    def of(cls, verb: Callable[..., object]) -> Report:
        """The report a :class:`CoreClient` method makes."""
        return next(report for report, send in _SENDS.items() if send is verb)

    def send(self, core: CoreClient, *args: Any, **kwargs: Any) -> None:
        _SENDS[self](core, *args, **kwargs)


_SENDS: dict[Report, Callable[..., object]] = {
    Report.OPERATOR_STARTED: CoreClient.operator_started,
    Report.OPERATOR_STOPPED: CoreClient.operator_stopped,
    Report.JOB_WARNING: CoreClient.job_warning,
    Report.JOB_STOPPED: CoreClient.job_stopped,
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, method TEXT NOT NULL,
    args TEXT NOT NULL, kwargs TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reports_job ON reports(job_id);
"""


class ReportOutbox:
    """Undelivered Core calls (``method``, JSON arguments), by job, in the order kept."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self, job_id: str, report: Report, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO reports (job_id, method, args, kwargs, created_at) VALUES (?,?,?,?,?)",
                (job_id, report.value, json.dumps(list(args)), json.dumps(kwargs), time.time()),
            )

    def holds(self, job_id: str) -> bool:
        """Whether any report of the job waits for delivery."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM reports WHERE job_id=? LIMIT 1", (job_id,))
            return row.fetchone() is not None

    def final_reports(self) -> set[str]:
        """The jobs whose final report waits for delivery."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT job_id FROM reports WHERE method=?", (Report.JOB_STOPPED.value,)
            ).fetchall()
        return {r[0] for r in rows}

    def holds_final_report(self, job_id: str, run: int) -> bool:
        """Whether the final report of the job's run ``run`` waits for delivery (a report
        kept before runs were numbered counts for any run)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM reports WHERE job_id=? AND method=? AND "
                "coalesce(json_extract(kwargs, '$.run'), ?) = ? LIMIT 1",
                (job_id, Report.JOB_STOPPED.value, run, run),
            )
            return row.fetchone() is not None

    def deliver(self, core: CoreClient) -> int:
        """Deliver what is held to ``core``, oldest first.

        A job's delivery stops at its first report that fails (kept, tried again
        next time); a report the Core refuses (a ClaraError: it can never be
        taken) is logged and removed.  Returns how many reports the Core took.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, job_id, method, args, kwargs FROM reports ORDER BY seq"
            ).fetchall()
        delivered = 0
        blocked: set[str] = set()
        for seq, job_id, method, args, kwargs in rows:
            if job_id in blocked:
                continue
            try:
                Report(method).send(core, *json.loads(args), **json.loads(kwargs))
            except ClaraError as exc:
                log.error("job %s: the Core refused the held report %s: %s", job_id, method, exc)
            except Exception as exc:  # the Core is still unreachable: keep it for next time
                log.info("job %s: report %s still undelivered: %s", job_id, method, exc)
                blocked.add(job_id)
                continue
            else:
                delivered += 1
                log.info("job %s: held report %s delivered", job_id, method)
            with self._lock:
                self._db.execute("DELETE FROM reports WHERE seq=?", (seq,))
        return delivered
