"""What the Core needs of whatever runs its jobs (the runner host, or a fake in tests)."""

from __future__ import annotations

from typing import Protocol

from clara_ray.contracts.records import JobRecord
from clara_ray.contracts.resources import ClusterCapacity

__all__ = ["LaunchUnconfirmed", "RunnerLauncher"]


class LaunchUnconfirmed(Exception):
    """The launcher cannot tell whether the runner started (its call timed out, say).

    Starting a job that already runs is a no-op, so the Core keeps the job
    Running and lets :meth:`CoreService.recover` confirm it or start it again.
    """


class RunnerLauncher(Protocol):
    """Starts, lists and stops job runners (a Ray actor in production).

    ``launch`` may block: the Core calls it from its launch thread, never under
    its lock.  It raises :class:`LaunchUnconfirmed` when the start may or may
    not have happened, anything else when it definitely failed.
    ``running_jobs`` names the jobs whose runners run, or hold a final report
    not yet delivered to the Core; ``None`` when that cannot be known now (the
    runner host is slow or unreachable).  ``cancel`` stops the job's run ``run``
    (any run when None).  ``cluster_capacity`` is what the cluster can hold, None
    when that cannot be known now; the Core asks it outside its lock.
    """

    def launch(self, job: JobRecord) -> None: ...
    def running_jobs(self) -> set[str] | None: ...
    def cancel(self, job_id: str, run: int | None = None) -> None: ...
    def cluster_capacity(self) -> ClusterCapacity | None: ...
