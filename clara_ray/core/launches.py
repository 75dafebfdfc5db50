"""The Core's launch thread: starts the runners of admitted jobs outside the Core's lock.

An admitted job is recorded Running at once; its runner is started here, one
launch at a time, so that a slow runner host never holds up the Core's
answers.  The thread counts the launches it has finished, so that the
reconcile loop does not mistake a job started after it asked the runner host
for one whose runner was lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection
from typing import Any

from clara_ray.contracts.launcher import LaunchUnconfirmed, RunnerLauncher
from clara_ray.contracts.records import JobRecord, JobState
from clara_ray.core.store import Store

__all__ = ["LaunchQueue"]

log = logging.getLogger(__name__)
_QUEUE_SIZE = 1024


class LaunchQueue:
    """Launches of Running jobs' runners; ``fault(job, reason)`` ends a job whose runner
    definitely could not start (called under ``lock``)."""

    def __init__(
        self,
        store: Store,
        launcher: RunnerLauncher,
        lock: Any,
        fault: Callable[[JobRecord, str], None],
    ) -> None:
        self.store = store
        self.launcher = launcher
        self._lock = lock
        self._fault = fault
        self._queue: queue.Queue[str] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._pending: set[str] = set()  # queued or being launched
        self.finished = 0  # counts finished launches
        self._finished_at: dict[str, int] = {}  # job id -> ``finished`` when its launch ended

    def request(self, job_id: str) -> None:
        """Queue the start of a Running job's runner (once); a full queue leaves it to the
        reconcile loop.  Called under the Core's lock."""
        if job_id in self._pending:
            return
        self._pending.add(job_id)
        try:
            self._queue.put_nowait(job_id)
        except queue.Full:
            self._pending.discard(job_id)
            log.warning(
                "job %s: %d launches already queued; the reconcile loop starts it later",
                job_id,
                _QUEUE_SIZE,
            )
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="clara-core-launcher", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Block until every launch asked for so far has been tried; False on timeout."""
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    def in_flight(self, job_id: str, since: int) -> bool:
        """Whether the job's launch is queued, running, or finished after launch ``since``."""
        return job_id in self._pending or self._finished_at.get(job_id, -1) > since

    def forget_all_but(self, running: Collection[str]) -> None:
        for job_id in [j for j in self._finished_at if j not in running]:
            del self._finished_at[job_id]

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self._launch(job_id)
            except Exception:  # a broken launch must not stop the launches behind it
                log.exception("job %s: launch failed", job_id)
            finally:
                self._queue.task_done()

    def _launch(self, job_id: str) -> None:
        """Start a job's runner outside the lock; fault the job if that definitely failed."""
        with self._lock:
            job = self.store.get_job(job_id)
            if job is None or job.state is not JobState.RUNNING:
                self._pending.discard(job_id)
                return
        failure: Exception | None = None
        try:
            self.launcher.launch(job)
        except LaunchUnconfirmed as exc:
            log.warning("job %s: start of its runner not confirmed (%s); rechecked", job_id, exc)
        except Exception as exc:  # the launcher is the edge to Ray; any failure faults the job
            failure = exc
        with self._lock:
            self._pending.discard(job_id)
            self.finished += 1
            self._finished_at[job_id] = self.finished
            current = self.store.get_job(job_id)
            if current is None or current.state is not JobState.RUNNING:
                if failure is None:  # stopped (canceled, evicted) while its runner was starting
                    self.launcher.cancel(job_id, job.run)
                return
            if failure is not None:
                self._fault(current, f"could not start the job runner: {failure}")
            elif current.run != job.run:  # evicted and admitted again while it started
                self.request(job_id)
