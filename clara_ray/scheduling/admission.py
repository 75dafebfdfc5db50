"""Who runs next: admission by resources in priority order, and eviction for urgent jobs.

Queued jobs are taken highest priority first, then oldest.  A job is admitted
when its demand fits in what the running jobs leave free (and a slot is free
under ``core.max_concurrent_jobs``; ``immediate`` jobs need none).  A job that
does not fit keeps the resources it is short of for itself: jobs behind it
may start only if they use none of those (a CPU job may pass a job waiting for
a GPU, nothing takes the GPU it waits for), so a wide job is never starved by
a stream of narrow ones.  A job that cannot fit even the whole cluster as it
is now waits for it to grow without holding anything back.

A job whose priority may evict (``scheduling.evicting_priorities``) and that
does not fit frees room by evicting running jobs of strictly lower priority:
lowest priority first, then the youngest, only jobs that hold some of what it
lacks, and afterwards any chosen job without which it would still fit is
spared.  A job it already evicted once, and that has run less than
``min_run_before_reeviction`` since, is left alone (no eviction loops).  If
all candidates together would not make room, nobody is evicted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from clara_ray.contracts.records import JobPriority
from clara_ray.contracts.resources import DIMENSIONS, Resources

__all__ = ["AdmissionPlan", "Eviction", "QueuedJob", "RunningJob", "plan_admission"]


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    priority: JobPriority
    demand: Resources
    queued_at: float


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    priority: JobPriority
    demand: Resources
    started_at: float
    yielded_to: frozenset[str] = frozenset()  # jobs that evicted it before


@dataclass(frozen=True)
class Eviction:
    victim: str
    by: str
    reason: str


@dataclass
class AdmissionPlan:
    admit: list[str] = field(default_factory=list)
    evict: list[Eviction] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # job id -> why it waits


@dataclass
class _Room:
    free: Resources | None  # None: the cluster's resources are not known
    slots: int

    def admits(self, job: QueuedJob) -> bool:
        return self.has_slot(job) and self.short_of(job) == ()

    def has_slot(self, job: QueuedJob) -> bool:
        return job.priority is JobPriority.IMMEDIATE or self.slots > 0

    def short_of(self, job: QueuedJob) -> tuple[str, ...]:
        return () if self.free is None else job.demand.short_of(self.free)

    def take(self, demand: Resources) -> None:
        self.slots -= 1
        if self.free is not None:
            self.free = self.free - demand

    def give(self, demand: Resources) -> None:
        self.slots += 1
        if self.free is not None:
            self.free = self.free + demand


def plan_admission(
    queued: Sequence[QueuedJob],
    running: Sequence[RunningJob],
    *,
    capacity: Resources | None,
    max_jobs: int,
    evicting: Collection[JobPriority],
    now: float,
    min_run_before_reeviction: float,
) -> AdmissionPlan:
    """Which queued jobs start, which running jobs are evicted for them, and why the rest wait."""
    plan = AdmissionPlan()
    held = Resources.total(r.demand for r in running)
    room = _Room(None if capacity is None else capacity - held, max_jobs - len(running))
    still_running = list(running)
    reserved: dict[str, str] = {}  # dimension -> the waiting job that keeps it
    for job in sorted(queued, key=lambda j: (-j.priority.rank, j.queued_at)):
        passes = [d for d in reserved if job.demand.uses(d)]
        if room.admits(job) and not passes:
            room.take(job.demand)
            plan.admit.append(job.job_id)
            continue
        if job.priority in evicting and not room.admits(job):
            victims = _victims(job, room, still_running, now, min_run_before_reeviction)
            if victims:
                for victim in victims:
                    still_running.remove(victim)
                    room.give(victim.demand)
                    plan.evict.append(Eviction(victim.job_id, job.job_id, _freed(victim, job)))
                room.take(job.demand)
                plan.admit.append(job.job_id)
                continue
        plan.waiting[job.job_id] = _why_waiting(job, room, capacity, passes, reserved, max_jobs)
        if capacity is not None and job.demand.fits_in(capacity):
            for d in room.short_of(job):
                reserved.setdefault(d, job.job_id)
    return plan


def _victims(
    job: QueuedJob,
    room: _Room,
    running: list[RunningJob],
    now: float,
    min_run: float,
) -> list[RunningJob]:
    """The fewest lower-priority running jobs whose eviction lets ``job`` in; [] if none do."""
    candidates = [
        r
        for r in running
        if r.priority.rank < job.priority.rank
        and not (job.job_id in r.yielded_to and now - r.started_at < min_run)
    ]
    candidates.sort(key=lambda r: (r.priority.rank, -r.started_at))
    trial = _Room(room.free, room.slots)
    chosen: list[RunningJob] = []
    for candidate in candidates:
        if trial.admits(job):
            break
        short = trial.short_of(job)
        if any(candidate.demand.uses(d) for d in short) or not trial.has_slot(job):
            chosen.append(candidate)
            trial.give(candidate.demand)
    if not trial.admits(job):
        return []
    for candidate in reversed(list(chosen)):
        spared = _Room(trial.free, trial.slots)
        spared.take(candidate.demand)
        if spared.admits(job):
            chosen.remove(candidate)
            trial = spared
    return chosen


def _freed(victim: RunningJob, job: QueuedJob) -> str:
    return (
        f"evicted by job {job.job_id} (priority {job.priority}) to free "
        f"{victim.demand.describe([d for d in DIMENSIONS if job.demand.uses(d)] or ['cpu'])}"
    )


def _why_waiting(
    job: QueuedJob,
    room: _Room,
    capacity: Resources | None,
    passes: list[str],
    reserved: dict[str, str],
    max_jobs: int,
) -> str:
    if capacity is not None and not job.demand.fits_in(capacity):
        short = job.demand.short_of(capacity)
        return (
            f"waiting for the cluster to grow: needs {job.demand.describe(short)}, "
            f"the cluster has {capacity.describe(short)}"
        )
    short = room.short_of(job)
    if short and room.free is not None:
        return (
            f"waiting for resources: needs {job.demand.describe(short)}, "
            f"{room.free.describe(short)} free"
        )
    if passes:
        blockers = sorted({reserved[d] for d in passes})
        return f"waiting behind job {', '.join(blockers)} for {', '.join(passes)}"
    return f"waiting for a slot: {max_jobs} jobs run (core.max_concurrent_jobs)"
