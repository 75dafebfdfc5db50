"""The Core's own metrics, exported through ``ray.util.metrics`` (the runners count jobs)."""

from __future__ import annotations

from ray.util.metrics import Counter

from clara_ray.contracts.records import JobRecord

__all__ = ["CoreMetrics"]


class CoreMetrics:
    def __init__(self) -> None:
        self.evicted = Counter(
            "clara_jobs_evicted_total",
            "Jobs evicted to make room for a job of higher priority, by pipeline and priority.",
            ("pipeline", "priority"),
        )

    def job_evicted(self, job: JobRecord, by: JobRecord) -> None:
        self.evicted.inc(1, {"pipeline": job.pipeline, "priority": str(job.priority)})
