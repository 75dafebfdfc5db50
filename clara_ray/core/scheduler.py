"""The Core's admission of queued jobs: by resources, in priority order, with eviction.

The decisions are :func:`clara_ray.scheduling.plan_admission`'s; this part
applies them to the store (under the Core's lock) and keeps the cluster's
capacity, which :meth:`JobScheduler.refresh_capacity` reads from the launcher
outside the lock.  An evicted job's runner is told to stop its run; the job is
requeued (its pipeline's ``eviction: requeue``, the default: back to Pending
with status Evicted, its operators reset, its payload untouched) or stopped
Evicted (``eviction: stop``).  Each eviction is kept in the job's
``evictions`` with the job that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from clara_ray.contracts.launcher import RunnerLauncher
from clara_ray.contracts.records import JobPriority, JobRecord, JobState, JobStatus, OperatorRecord
from clara_ray.contracts.resources import ClusterCapacity, Resources
from clara_ray.core.store import Store
from clara_ray.errors import UnschedulableError
from clara_ray.pipeline import ResolvedPipeline, parse_pipeline, resolve_pipeline
from clara_ray.scheduling import QueuedJob, RunningJob, pipeline_demand, plan_admission, refusal

__all__ = ["AdmissionPolicy", "JobScheduler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmissionPolicy:
    """``max_jobs``: core.max_concurrent_jobs; the rest: the ``scheduling`` settings."""

    max_jobs: int = 4
    evicting: Collection[JobPriority] = (JobPriority.IMMEDIATE,)
    min_run_before_reeviction: float = 60.0
    gpu_fallback: bool = True  # core.gpu_fallback: GPU requests count as none on a GPU-less cluster


class JobScheduler:
    """Admits, evicts and explains waiting; called by :class:`CoreService` under its lock."""

    def __init__(
        self,
        store: Store,
        launcher: RunnerLauncher,
        policy: AdmissionPolicy,
        clock: Callable[[], float],
        *,
        stop: Callable[[JobRecord, JobStatus, str | None], None],
        launch: Callable[[str], None],
        on_evicted: Callable[[JobRecord, JobRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.launcher = launcher
        self.policy = policy
        self._clock = clock
        self._stop = stop
        self._launch = launch
        self._on_evicted = on_evicted
        self.capacity: ClusterCapacity | None = None

    def refresh_capacity(self) -> None:
        """Read the cluster's capacity (blocking on Ray: call it outside the Core's lock);
        an unknown answer keeps the last one."""
        capacity = self.launcher.cluster_capacity()
        if capacity is not None:
            self.capacity = capacity

    # -- demand ----------------------------------------------------------------
    def demand_of(self, plan: ResolvedPipeline) -> Resources:
        """A new job's demand; raises UnschedulableError when it can never fit the cluster."""
        demand, requests = pipeline_demand(plan)
        if self.capacity is not None:
            why = refusal(
                self._effective(demand),
                {name: self._effective(r) for name, r in requests.items()},
                self.capacity,
            )
            if why:
                raise UnschedulableError(
                    f"pipeline '{plan.name}' cannot run on this cluster: {why}; lower the "
                    "operators' requests, or add nodes (or set scheduling.capacity to what an "
                    "autoscaling cluster can grow to)"
                )
        return demand

    def _effective(self, demand: Resources) -> Resources:
        """What a demand holds on this cluster: GPU requests run on CPU where it has none."""
        if self.policy.gpu_fallback and self.capacity is not None and self.capacity.total.gpu == 0:
            return demand.without_gpu()
        return demand

    def _job_demand(self, job: JobRecord) -> Resources:
        if job.demand:
            return self._effective(Resources.of(job.demand))
        spec = parse_pipeline(job.definition, source=f"job {job.job_id}", check_imports=False)
        return self._effective(pipeline_demand(resolve_pipeline(spec, job.parameters))[0])

    # -- admission -------------------------------------------------------------
    def admit(self) -> None:
        """Start what fits, evict where an urgent job needs room, say why the rest waits."""
        running = {j.job_id: j for j in self.store.list_jobs(JobState.RUNNING)}
        queued = {
            j.job_id: j for j in self.store.list_jobs(JobState.PENDING) if j.queued_at is not None
        }
        if not queued:
            return
        plan = plan_admission(
            [
                QueuedJob(j.job_id, j.priority, self._job_demand(j), float(j.queued_at or 0.0))
                for j in queued.values()
            ],
            [
                RunningJob(
                    j.job_id, j.priority, self._job_demand(j), j.started_at or 0.0, j.yielded_to
                )
                for j in running.values()
            ],
            capacity=None if self.capacity is None else self.capacity.total,
            max_jobs=self.policy.max_jobs,
            evicting=self.policy.evicting,
            now=self._clock(),
            min_run_before_reeviction=self.policy.min_run_before_reeviction,
        )
        for eviction in plan.evict:
            self._evict(running[eviction.victim], queued[eviction.by], eviction.reason)
        for job_id in plan.admit:
            self._start(queued[job_id])
        for job_id, why in plan.waiting.items():
            job = queued[job_id]
            if job.reason != why:
                job.reason = why
                self.store.put_job(job)

    def _start(self, job: JobRecord) -> None:
        job.state, job.status, job.reason = JobState.RUNNING, JobStatus.HEALTHY, None
        job.started_at, job.run = self._clock(), job.run + 1
        self.store.put_job(job)
        log.info("job %s admitted (run %d, priority %s)", job.job_id, job.run, job.priority)
        self._launch(job.job_id)

    def _evict(self, job: JobRecord, by: JobRecord, reason: str) -> None:
        requeue = _eviction_policy(job) == "requeue"
        job.evictions.append(
            {
                "at": self._clock(),
                "by": by.job_id,
                "by_name": by.name,
                "priority": str(by.priority),
                "run": job.run,
                "reason": reason,
                "requeued": requeue,
            }
        )
        self.launcher.cancel(job.job_id, job.run)
        if requeue:
            with self.store.transaction():
                job.state, job.status = JobState.PENDING, JobStatus.EVICTED
                job.reason, job.started_at = f"{reason}; requeued", None
                self.store.put_job(job)
                for op in self.store.list_operators(job.job_id):
                    self.store.put_operator(OperatorRecord(job_id=job.job_id, name=op.name))
            log.info("job %s %s; requeued", job.job_id, reason)
        else:
            self._stop(job, JobStatus.EVICTED, reason)
        if self._on_evicted is not None:
            self._on_evicted(job, by)


def _eviction_policy(job: JobRecord) -> str:
    spec = parse_pipeline(job.definition, source=f"job {job.job_id}", check_imports=False)
    return spec.eviction


def describe_capacity(capacity: ClusterCapacity | None) -> Mapping[str, Any] | None:
    """The capacity as the Core reports it (``ping``)."""
    if capacity is None:
        return None
    return {"total": capacity.total.to_dict(), "nodes": [n.to_dict() for n in capacity.nodes]}
