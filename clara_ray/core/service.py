"""Core: the single source of truth for pipelines, payloads, jobs and operator runs.

Plain code, free of Ray: the Ray actor in :mod:`clara_ray.core.actor` only
adapts it, and a :class:`RunnerLauncher` starts and stops job runners.  Every
transition is persisted before a method returns, a transition of several rows
in one unit of work; every method is idempotent (ids are chosen by the caller,
and repeating a call with the same id returns the existing record).

Which queued job runs next (by resources and priority, evicting for urgent
jobs) is the :class:`~clara_ray.core.scheduler.JobScheduler`'s to decide.
Nothing that waits on Ray runs under the Core's lock: an admitted job is
recorded Running at once and its runner is started by the launch thread
(:class:`~clara_ray.core.launches.LaunchQueue`); liveness is one question to the launcher per :meth:`CoreService.recover`,
asked outside the lock, and an answer it cannot get ("unknown") decides
nothing.  Only a definite answer (the runner host answered without the job, or
there is no host) makes a job lost.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from clara_ray.contracts.launcher import RunnerLauncher
from clara_ray.contracts.records import (
    ExportRecord,
    JobPriority,
    JobRecord,
    JobState,
    JobStatus,
    OperatorRecord,
)
from clara_ray.core.catalog import PayloadCatalog, PipelineCatalog
from clara_ray.core.dicom_registry import DicomRegistry
from clara_ray.core.events import EventLog
from clara_ray.core.launches import LaunchQueue
from clara_ray.core.scheduler import AdmissionPolicy, JobScheduler
from clara_ray.core.store import Store
from clara_ray.errors import ClaraError, ConflictError, NotFoundError, UnschedulableError
from clara_ray.export.ledger import ExportLedger
from clara_ray.pipeline import parse_pipeline, resolve_pipeline
from clara_ray.storage import Storage

__all__ = ["CoreService"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_RESULTS_CACHE_SIZE = 256


def _locked(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: CoreService, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CoreService:
    """Jobs and their operators; the pipelines in :attr:`pipelines`, the payloads in
    :attr:`payloads`, the DICOM configuration in :attr:`dicom`, the exports in
    :attr:`exports` and the log of state changes in :attr:`events`."""

    def __init__(
        self,
        store: Store,
        storage: Storage,
        launcher: RunnerLauncher,
        *,
        max_concurrent_jobs: int = 4,
        policy: AdmissionPolicy | None = None,
        event_retention: int = 100_000,
        clock: Callable[[], float] = time.time,
        on_evicted: Callable[[JobRecord, JobRecord], None] | None = None,
    ) -> None:
        """``policy`` (admission and eviction) defaults to ``max_concurrent_jobs`` and the
        default ``scheduling`` settings; ``on_evicted(job, by)`` is told of each eviction."""
        self.store = store
        self.storage = storage
        self.launcher = launcher
        self.event_retention = event_retention
        self._clock = clock
        self._lock = threading.RLock()
        self._results_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.pipelines = PipelineCatalog(store, clock)
        self.payloads = PayloadCatalog(store, storage, clock)
        self.dicom = DicomRegistry(store, self.pipelines.get_pipeline)
        self.exports = ExportLedger(store, storage, self.dicom.dicom_config, clock)
        self.events = EventLog(store)
        self.launches = LaunchQueue(store, launcher, self._lock, self._fault)
        self.scheduler = JobScheduler(
            store,
            launcher,
            policy or AdmissionPolicy(max_jobs=max_concurrent_jobs),
            clock,
            stop=self._stop,
            launch=lambda job_id: self.launches.request(job_id),
            on_evicted=on_evicted,
        )

    # -- jobs ------------------------------------------------------------------
    def create_job(
        self,
        job_id: str,
        pipeline: str,
        payload: str,
        *,
        name: str | None = None,
        priority: str = "normal",
        parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Create a job (not yet queued). ``runtime_env`` is the Ray runtime environment
        its runner and operator tasks get (e.g. the working dir of ``ray job submit``).
        A job whose operators can never fit the cluster is refused (UnschedulableError),
        on a fresh reading of the cluster (a node may have joined since the last tick)."""

        def attempt() -> JobRecord:
            with self._lock:
                return self._create_job(
                    job_id,
                    pipeline,
                    payload,
                    name=name,
                    priority=priority,
                    parameters=parameters,
                    metadata=metadata,
                    runtime_env=runtime_env,
                )

        try:
            return attempt()
        except UnschedulableError:  # decided on a reading of up to a tick ago: read it again
            self.scheduler.refresh_capacity()
            return attempt()

    def _create_job(
        self,
        job_id: str,
        pipeline: str,
        payload: str,
        *,
        name: str | None = None,
        priority: str = "normal",
        parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> JobRecord:

        prio = JobPriority.parse(priority, "priority")
        pipe = self.pipelines.get_pipeline(pipeline)
        payload_rec = self.payloads.get_payload(payload)
        existing = self.store.get_job(job_id)
        if existing:
            if (existing.pipeline, existing.payload_id) != (pipe.name, payload_rec.payload_id):
                raise ConflictError(
                    f"job id {job_id} already exists for pipeline '{existing.pipeline}' on payload "
                    f"{existing.payload_id}; use a new id for a different job"
                )
            return existing
        spec = parse_pipeline(
            pipe.definition, source=f"pipeline '{pipe.name}'", check_imports=False
        )
        resolved = resolve_pipeline(spec, parameters or {})
        demand = self.scheduler.demand_of(resolved)
        now = self._clock()
        job = JobRecord(
            job_id=job_id,
            name=name or f"{pipe.name}-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}",
            pipeline=pipe.name,
            definition=pipe.definition,
            payload_id=payload_rec.payload_id,
            priority=prio,
            parameters=resolved.parameters,
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
            runtime_env=dict(runtime_env or {}),
            created_at=now,
            demand=demand.to_dict(),
        )
        with self.store.transaction():
            self.store.put_job(job)
            for op in resolved.operators:
                self.store.put_operator(OperatorRecord(job_id=job_id, name=op.name))
        log.info("job %s (%s) created on payload %s", job_id, job.pipeline, job.payload_id)
        return job

    @_locked
    def get_job(self, job_id: str) -> JobRecord:
        rec = self.store.get_job(job_id)
        if rec is None:
            raise NotFoundError(f"job '{job_id}' does not exist (see `clara-ray list jobs`)")
        return rec

    @_locked
    def describe_job(self, job_id: str, *, results: bool = True) -> dict[str, Any]:
        """The job with its operators, its exports and, unless ``results`` is False, the
        files in its results (a storage listing; kept for stopped jobs, whose results
        no longer change)."""
        job = self.get_job(job_id)
        described = {
            **job.to_dict(),
            "operators": [op.to_dict() for op in self.store.list_operators(job_id)],
            "exports": [e.to_dict() for e in self.store.list_exports(job_id=job_id)],
        }
        if results:
            described["results"] = self._results(job)
        return described

    def _results(self, job: JobRecord) -> list[dict[str, Any]]:
        listing = self._results_cache.get(job.job_id)
        if listing is not None:
            self._results_cache.move_to_end(job.job_id)
        else:
            listing = [
                {"path": f.path, "size": f.size} for f in self.storage.list_results(job.job_id)
            ]
            if job.state is JobState.STOPPED:
                self._results_cache[job.job_id] = listing
                if len(self._results_cache) > _RESULTS_CACHE_SIZE:
                    self._results_cache.popitem(last=False)
        return [dict(entry) for entry in listing]

    @_locked
    def list_jobs(
        self,
        state: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        since: float | None = None,
    ) -> list[JobRecord]:
        """Jobs in creation order; ``since``: created at or after (epoch seconds)."""
        st = JobState.parse(state, "state") if state else None
        wanted = JobStatus.parse(status, "status") if status else None
        return [
            job
            for job in self.store.list_jobs(st, pipeline)
            if (wanted is None or job.status is wanted)
            and (since is None or job.created_at >= since)
        ]

    @_locked
    def update_metadata(self, job_id: str, metadata: Mapping[str, str]) -> JobRecord:
        job = self.get_job(job_id)
        job.metadata.update({str(k): str(v) for k, v in metadata.items()})
        self.store.put_job(job)
        return job

    @_locked
    def start_job(self, job_id: str) -> JobRecord:
        """Queue a created job; it runs when admitted. Starting a queued job again is a no-op."""
        job = self.get_job(job_id)
        if job.state is JobState.STOPPED:
            raise ConflictError(
                f"job {job_id} has already stopped ({job.status}); create a new job"
            )
        if job.queued_at is None:
            job.queued_at = self._clock()
            self.store.put_job(job)
            log.info("job %s queued with priority %s", job_id, job.priority)
        self._admit()
        return self.get_job(job_id)

    @_locked
    def cancel_job(self, job_id: str, reason: str = "canceled by request") -> JobRecord:
        job = self.get_job(job_id)
        if job.state is JobState.STOPPED:
            return job
        was_running = job.state is JobState.RUNNING
        self._stop(job, JobStatus.CANCELED, reason)
        if was_running:
            self.launcher.cancel(job_id)
        self._admit()
        return job

    # -- reports from job runners ----------------------------------------------
    @_locked
    def operator_started(
        self,
        job_id: str,
        operator: str,
        *,
        started_at: float,
        node_id: str | None,
        node_ip: str | None,
        gpu_ids: list[int],
        run: int | None = None,
    ) -> None:
        """An attempt of an operator started. Attempts are told apart by ``started_at``:
        a repeated report of the recorded attempt (a retried call) counts nothing."""
        if self._stale(job_id, run):
            return
        op = self._operator(job_id, operator)
        if op.state is JobState.STOPPED:
            return
        if op.started_at is not None and started_at <= op.started_at:
            return
        op.state, op.attempts = JobState.RUNNING, op.attempts + 1
        op.started_at, op.node_id, op.node_ip, op.gpu_ids = (
            started_at,
            node_id,
            node_ip,
            list(gpu_ids),
        )
        self.store.put_operator(op)

    @_locked
    def operator_stopped(
        self,
        job_id: str,
        operator: str,
        *,
        status: str,
        ended_at: float,
        message: str | None = None,
        started_at: float | None = None,
        node_id: str | None = None,
        node_ip: str | None = None,
        gpu_ids: list[int] | None = None,
        run: int | None = None,
    ) -> None:
        if self._stale(job_id, run):
            return
        op = self._operator(job_id, operator)
        if op.state is JobState.STOPPED:
            return
        op.state, op.status = JobState.STOPPED, JobStatus(status)
        op.ended_at, op.message = ended_at, message
        if started_at is not None:
            op.started_at = started_at
            op.attempts = max(op.attempts, 1)
        op.node_id = node_id or op.node_id
        op.node_ip = node_ip or op.node_ip
        if gpu_ids is not None:
            op.gpu_ids = list(gpu_ids)
        self.store.put_operator(op)

    @_locked
    def job_warning(self, job_id: str, warning: str, run: int | None = None) -> None:
        if self._stale(job_id, run):
            return
        job = self.get_job(job_id)
        if warning not in job.warnings:
            job.warnings.append(warning)
            self.store.put_job(job)

    @_locked
    def job_stopped(
        self, job_id: str, status: str, reason: str | None = None, run: int | None = None
    ) -> JobRecord:
        """The runner's final report. A Healthy stop and the job's exports are recorded in
        one unit of work; when the results cannot be read now (storage unreachable),
        neither is, and the error is raised so that the runner reports again.  The first
        final word wins: a report for a job that has already stopped changes nothing, nor
        does the report of an evicted run."""
        job = self.get_job(job_id)
        if job.state is not JobState.STOPPED and not self._stale(job_id, run):
            stopped = JobStatus(status)
            try:
                with self.store.transaction():
                    if stopped is JobStatus.HEALTHY:
                        self._record_exports(job)
                    self._stop(job, stopped, reason)
            except ClaraError:
                raise
            except Exception as exc:
                log.warning(
                    "job %s: Healthy stop not recorded, its results cannot be read now "
                    "(%s: %s); the runner reports it again",
                    job_id,
                    type(exc).__name__,
                    exc,
                )
                raise
        self._admit()
        return job

    # -- housekeeping ----------------------------------------------------------
    def recover(self) -> None:
        """Reconcile with the runners, then admit; after a restart and on every reconcile tick.

        Asks the launcher once, outside the lock, which jobs its runners hold. A job
        recorded Running that it definitely does not hold is started again if none of
        its operators had started, else faulted; when the answer is unknown, nothing is
        decided.  A run the Core does not hold Running is canceled.  Healthy jobs whose
        exports were never recorded get them now.  Events beyond the newest
        ``event_retention`` are dropped.
        """
        with self._lock:
            asked_at = self.launches.finished
        self.scheduler.refresh_capacity()
        alive = self.launcher.running_jobs()
        with self._lock:
            self.store.prune_events(self.event_retention)
            self._record_missing_exports()
            if alive is not None:
                self._reconcile(alive, asked_at)
            self._admit()

    def wait_for_launches(self, timeout: float = 30.0) -> bool:
        """Block until every launch asked for so far has been tried; False on timeout."""
        return self.launches.wait(timeout)

    def _reconcile(self, alive: set[str], asked_at: int) -> None:
        running = self.store.list_jobs(JobState.RUNNING)
        for job in running:
            if job.job_id in alive or self.launches.in_flight(job.job_id, asked_at):
                continue
            if all(op.attempts == 0 for op in self.store.list_operators(job.job_id)):
                log.info(
                    "job %s: runner missing before any operator started; relaunching", job.job_id
                )
                self.launches.request(job.job_id)
                continue
            self._stop(
                job,
                JobStatus.FAULTED,
                "the job's runner was lost (its process or node died) after operators had "
                "started; create a new job to run the pipeline again",
            )
        running_ids = {j.job_id for j in running}
        for job_id in sorted(alive - running_ids):
            held = self.store.get_job(job_id)
            if held is not None and held.state is JobState.STOPPED:
                log.info(
                    "job %s: stopped (%s) but its runner runs; canceling it", job_id, held.status
                )
                self.launcher.cancel(job_id)
        self.launches.forget_all_but(running_ids)

    def _record_missing_exports(self) -> None:
        for job in self.store.list_jobs_lacking_exports():
            try:
                with self.store.transaction():
                    created = self._record_exports(job)
            except Exception as exc:  # storage unreachable: tried again on the next tick
                log.warning(
                    "job %s: exports not recorded yet, its results cannot be read (%s: %s)",
                    job.job_id,
                    type(exc).__name__,
                    exc,
                )
                continue
            log.info("job %s: %d export(s) recorded after its stop", job.job_id, len(created))

    def _record_exports(self, job: JobRecord) -> list[ExportRecord]:
        """The exports of a Healthy job, recorded, and the job marked as having them."""
        created = self.exports.record_job_exports(job.job_id)
        job.exports_created = True
        self.store.put_job(job)
        return created

    def _stale(self, job_id: str, run: int | None) -> bool:
        """Whether a runner's report belongs to a run that is no longer the job's current
        one (an evicted run winding down); reports that name no run are current."""
        if run is None:
            return False
        job = self.get_job(job_id)
        stale = job.run != run or job.state is not JobState.RUNNING
        if stale:
            log.info(
                "job %s: report of its run %d ignored (now run %d, %s)",
                job_id,
                run,
                job.run,
                job.state,
            )
        return stale

    def _operator(self, job_id: str, name: str) -> OperatorRecord:
        for op in self.store.list_operators(job_id):
            if op.name == name:
                return op
        raise NotFoundError(f"job {job_id} has no operator '{name}'")

    def _stop(self, job: JobRecord, status: JobStatus, reason: str | None) -> None:
        """Stop the job and its unfinished operators, in one unit of work."""
        now = self._clock()
        job.state, job.status, job.reason, job.ended_at = JobState.STOPPED, status, reason, now
        with self.store.transaction():
            self.store.put_job(job)
            for op in self.store.list_operators(job.job_id):
                if op.state is not JobState.STOPPED:
                    op.state, op.ended_at = JobState.STOPPED, now if op.started_at else None
                    op.status = JobStatus.CANCELED if status is JobStatus.HEALTHY else status
                    op.message = op.message or f"job stopped: {status}"
                    self.store.put_operator(op)
        log.info("job %s stopped: %s%s", job.job_id, status, f" ({reason})" if reason else "")

    def _fault(self, job: JobRecord, reason: str) -> None:
        self._stop(job, JobStatus.FAULTED, reason)
        self._admit()

    def _admit(self) -> None:
        """Admit queued jobs (recorded Running now, started by the launch thread)."""
        self.scheduler.admit()
