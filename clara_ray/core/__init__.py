"""Core: jobs, payloads, pipelines and results; SQLite is the source of truth."""

from clara_ray.core.model import JobPriority, JobRecord, JobState, JobStatus, OperatorRecord
from clara_ray.core.service import CoreService
from clara_ray.core.store import SQLiteStore, Store

__all__ = [
    "CoreService",
    "JobPriority",
    "JobRecord",
    "JobState",
    "JobStatus",
    "OperatorRecord",
    "SQLiteStore",
    "Store",
]
