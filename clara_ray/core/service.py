"""Core: the single source of truth for pipelines, payloads, jobs and operator runs.

Plain code, free of Ray: the Ray actor in :mod:`clara_ray.core.actor` only
adapts it, and a :class:`RunnerLauncher` starts and stops job runners.  Every
transition is persisted before a method returns; every method is idempotent
(ids are chosen by the caller, and repeating a call with the same id returns
the existing record).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from clara_ray.core.dicom_registry import DicomRegistryMixin
from clara_ray.core.exports import ExportsMixin
from clara_ray.core.model import (
    JobPriority,
    JobRecord,
    JobState,
    JobStatus,
    OperatorRecord,
    PayloadRecord,
    PipelineRecord,
)
from clara_ray.core.store import Store
from clara_ray.errors import ConflictError, NotFoundError
from clara_ray.pipeline import parse_pipeline, resolve_pipeline
from clara_ray.storage import Storage

__all__ = ["CoreService", "RunnerLauncher"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class RunnerLauncher(Protocol):
    """Starts, probes and stops the runner of a job (a Ray actor in production)."""

    def launch(self, job: JobRecord) -> None: ...
    def is_alive(self, job_id: str) -> bool: ...
    def cancel(self, job_id: str) -> None: ...


def _locked(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: CoreService, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CoreService(ExportsMixin, DicomRegistryMixin):
    def __init__(
        self,
        store: Store,
        storage: Storage,
        launcher: RunnerLauncher,
        *,
        max_concurrent_jobs: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.storage = storage
        self.launcher = launcher
        self.max_concurrent_jobs = max_concurrent_jobs
        self._clock = clock
        self._lock = threading.RLock()

    # -- pipelines -------------------------------------------------------------
    @_locked
    def create_pipeline(self, definition: str, source: str = "<api>") -> PipelineRecord:
        """Validate and store a pipeline; same name replaces it (version + 1).

        Operator imports are checked by the client that submits the file (its
        environment, e.g. a ``ray job submit`` working dir, is where they must
        import), not here.
        """
        spec = parse_pipeline(definition, source=source, check_imports=False)
        now = self._clock()
        existing = self.store.get_pipeline(spec.name)
        if existing and existing.definition == definition:
            return existing
        rec = PipelineRecord(
            name=spec.name,
            pipeline_id=existing.pipeline_id if existing else uuid.uuid4().hex,
            definition=definition,
            source=source,
            version=existing.version + 1 if existing else 1,
            created_at=existing.created_at if existing else now,
            updated_at=now,
            description=spec.description,
        )
        self.store.put_pipeline(rec)
        log.info("pipeline %s stored (version %d)", rec.name, rec.version)
        return rec

    @_locked
    def get_pipeline(self, name: str) -> PipelineRecord:
        rec = self.store.get_pipeline(name)
        if rec is None:
            raise NotFoundError(
                f"pipeline '{name}' does not exist (see `clara-ray list pipelines`)"
            )
        return rec

    @_locked
    def list_pipelines(self) -> list[PipelineRecord]:
        return self.store.list_pipelines()

    @_locked
    def delete_pipeline(self, name: str) -> bool:
        rec = self.get_pipeline(name)
        return self.store.delete_pipeline(rec.name)

    # -- payloads --------------------------------------------------------------
    @_locked
    def register_payload(
        self,
        payload_id: str,
        *,
        name: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PayloadRecord:
        """Seal an uploaded payload and record it; a named payload is a reusable dataset."""
        existing = self.store.get_payload(payload_id)
        if existing:
            return existing
        if name and (other := self.store.find_payload_by_name(name)):
            raise ConflictError(f"a payload named '{name}' already exists ({other.payload_id})")
        manifest = self.storage.seal_payload(payload_id)
        if not manifest.files:
            raise NotFoundError(
                f"payload {payload_id} has no files; upload them before registering it"
            )
        rec = PayloadRecord(
            payload_id=payload_id,
            files=len(manifest.files),
            bytes=manifest.total_bytes,
            created_at=self._clock(),
            name=name,
            source=source,
            metadata=dict(metadata or {}),
        )
        self.store.put_payload(rec)
        log.info("payload %s sealed: %d files, %d bytes", payload_id, rec.files, rec.bytes)
        return rec

    @_locked
    def get_payload(self, ref: str) -> PayloadRecord:
        rec = self.store.get_payload(ref) or self.store.find_payload_by_name(ref)
        if rec is None:
            raise NotFoundError(f"payload '{ref}' does not exist (see `clara-ray list payloads`)")
        return rec

    @_locked
    def list_payloads(self) -> list[PayloadRecord]:
        return self.store.list_payloads()

    @_locked
    def delete_payload(self, ref: str) -> bool:
        rec = self.get_payload(ref)
        active = [
            j.job_id
            for j in self.store.list_jobs()
            if j.payload_id == rec.payload_id and j.state is not JobState.STOPPED
        ]
        if active:
            raise ConflictError(
                f"payload {rec.payload_id} is used by unfinished jobs: {', '.join(active)}"
            )
        self.storage.delete_payload(rec.payload_id)
        return self.store.delete_payload(rec.payload_id)

    # -- jobs ------------------------------------------------------------------
    @_locked
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
        its runner and operator tasks get (e.g. the working dir of ``ray job submit``)."""
        prio = JobPriority.parse(priority, "priority")
        pipe = self.get_pipeline(pipeline)
        payload_rec = self.get_payload(payload)
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
        now = self._clock()
        job = JobRecord(
            job_id=job_id,
            name=name or f"{pipe.name}-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}",
            pipeline=pipe.name,
            definition=pipe.definition,
            payload_id=payload_rec.payload_id,
            priority=prio,  # type: ignore[arg-type]
            parameters=resolved.parameters,
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
            runtime_env=dict(runtime_env or {}),
            created_at=now,
        )
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
    def describe_job(self, job_id: str) -> dict[str, Any]:
        job = self.get_job(job_id)
        return {
            **job.to_dict(),
            "operators": [op.to_dict() for op in self.store.list_operators(job_id)],
            "exports": [e.to_dict() for e in self.store.list_exports(job_id=job_id)],
            "results": [
                {"path": f.path, "size": f.size} for f in self.storage.list_results(job_id)
            ],
        }

    @_locked
    def list_jobs(self, state: str | None = None, pipeline: str | None = None) -> list[JobRecord]:
        st = JobState.parse(state, "state") if state else None
        return self.store.list_jobs(st, pipeline)

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
    ) -> None:
        op = self._operator(job_id, operator)
        if op.state is JobState.STOPPED:
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
    ) -> None:
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
    def job_warning(self, job_id: str, warning: str) -> None:
        job = self.get_job(job_id)
        if warning not in job.warnings:
            job.warnings.append(warning)
            self.store.put_job(job)

    @_locked
    def job_stopped(self, job_id: str, status: str, reason: str | None = None) -> JobRecord:
        job = self.get_job(job_id)
        if job.state is not JobState.STOPPED:
            self._stop(job, JobStatus(status), reason)
            if job.status is JobStatus.HEALTHY:
                self._create_exports(job)
        self._admit()
        return job

    # -- housekeeping ----------------------------------------------------------
    @_locked
    def recover(self) -> None:
        """After a restart: re-attach to live runners, fault jobs whose runner is gone, admit."""
        for job in self.store.list_jobs(JobState.RUNNING):
            if self.launcher.is_alive(job.job_id):
                continue
            if all(op.attempts == 0 for op in self.store.list_operators(job.job_id)):
                log.info(
                    "job %s: runner missing before any operator started; relaunching", job.job_id
                )
                self._launch(job)
                continue
            self._stop(
                job,
                JobStatus.FAULTED,
                "the job's runner was lost (its process or node died) after operators had "
                "started; create a new job to run the pipeline again",
            )
        self._admit()

    def _operator(self, job_id: str, name: str) -> OperatorRecord:
        for op in self.store.list_operators(job_id):
            if op.name == name:
                return op
        raise NotFoundError(f"job {job_id} has no operator '{name}'")

    def _stop(self, job: JobRecord, status: JobStatus, reason: str | None) -> None:
        now = self._clock()
        job.state, job.status, job.reason, job.ended_at = JobState.STOPPED, status, reason, now
        self.store.put_job(job)
        for op in self.store.list_operators(job.job_id):
            if op.state is not JobState.STOPPED:
                op.state, op.ended_at = JobState.STOPPED, now if op.started_at else None
                op.status = JobStatus.CANCELED if status is JobStatus.HEALTHY else status
                op.message = op.message or f"job stopped: {status}"
                self.store.put_operator(op)
        log.info("job %s stopped: %s%s", job.job_id, status, f" ({reason})" if reason else "")

    def _admit(self) -> None:
        running = len(self.store.list_jobs(JobState.RUNNING))
        queued = [j for j in self.store.list_jobs(JobState.PENDING) if j.queued_at is not None]
        queued.sort(key=lambda j: (-j.priority.rank, j.queued_at))
        for job in queued:
            if running >= self.max_concurrent_jobs and job.priority is not JobPriority.IMMEDIATE:
                break
            job.state, job.started_at = JobState.RUNNING, self._clock()
            self.store.put_job(job)
            if self._launch(job):
                running += 1
                log.info("job %s admitted (%d running)", job.job_id, running)

    def _launch(self, job: JobRecord) -> bool:
        try:
            self.launcher.launch(job)
        except Exception as exc:  # the launcher is the edge to Ray; any failure faults the job
            self._stop(job, JobStatus.FAULTED, f"could not start the job runner: {exc}")
            return False
        return True
