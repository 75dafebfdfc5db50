"""Job and operator counts and durations, exported through ``ray.util.metrics``."""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

__all__ = ["RunnerMetrics"]

_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


class RunnerMetrics:
    def __init__(self) -> None:
        self.jobs = Counter(
            "clara_jobs_total", "Jobs that stopped, by pipeline and status.", ("pipeline", "status")
        )
        self.job_seconds = Histogram(
            "clara_job_duration_seconds", "Wall time of jobs.", _BOUNDARIES, ("pipeline", "status")
        )
        self.operators = Counter(
            "clara_operator_runs_total",
            "Operator runs that stopped, by pipeline, operator and status.",
            ("pipeline", "operator", "status"),
        )
        self.operator_seconds = Histogram(
            "clara_operator_duration_seconds",
            "Wall time of successful operator runs.",
            _BOUNDARIES,
            ("pipeline", "operator"),
        )

    def job_finished(self, pipeline: str, status: str, seconds: float) -> None:
        tags = {"pipeline": pipeline, "status": status}
        self.jobs.inc(1, tags)
        self.job_seconds.observe(seconds, tags)

    def operator_finished(
        self, pipeline: str, operator: str, status: str, seconds: float | None
    ) -> None:
        self.operators.inc(1, {"pipeline": pipeline, "operator": operator, "status": status})
        if seconds is not None:
            self.operator_seconds.observe(seconds, {"pipeline": pipeline, "operator": operator})
