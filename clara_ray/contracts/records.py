"""Job, payload, pipeline and export records, and the coded values of their lifecycle (as in Clara).

The Core stores them and returns them from its verbs; callers of the Core read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Self

__all__ = [
    "EventRecord",
    "ExportRecord",
    "ExportState",
    "JobPriority",
    "JobRecord",
    "JobState",
    "JobStatus",
    "OperatorRecord",
    "PayloadRecord",
    "PipelineRecord",
]


class _CodedValue(str, Enum):
    """An enum that accepts its string form case-insensitively and prints as it."""

    @classmethod
    def _missing_(cls, value: object) -> _CodedValue | None:
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None

    @classmethod
    def parse(cls, value: str, what: str) -> Self:
        try:
            return cls(value)
        except ValueError:
            expected = ", ".join(m.value for m in cls)
            raise ValueError(f"{what} {value!r} is not one of: {expected}") from None

    def __str__(self) -> str:
        return self.value


class JobState(_CodedValue):
    PENDING = "Pending"
    RUNNING = "Running"
    STOPPED = "Stopped"


class JobStatus(_CodedValue):
    HEALTHY = "Healthy"
    FAULTED = "Faulted"
    CANCELED = "Canceled"
    EVICTED = "Evicted"
    TIMEOUT = "Timeout"


class JobPriority(_CodedValue):
    LOWER = "lower"
    NORMAL = "normal"
    HIGHER = "higher"
    IMMEDIATE = "immediate"

    @property
    def rank(self) -> int:
        return list(JobPriority).index(self)


def _plain(obj: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Enum) else v) for k, v in asdict(obj).items()}


@dataclass
class PipelineRecord:
    name: str
    pipeline_id: str
    definition: str
    source: str
    version: int
    created_at: float
    updated_at: float
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class PayloadRecord:
    payload_id: str
    files: int
    bytes: int
    created_at: float
    name: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class OperatorRecord:
    job_id: str
    name: str
    state: JobState = JobState.PENDING
    status: JobStatus = JobStatus.HEALTHY
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    node_id: str | None = None
    node_ip: str | None = None
    gpu_ids: list[int] = field(default_factory=list)
    message: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {**_plain(self), "duration": self.duration}


@dataclass
class JobRecord:
    job_id: str
    name: str
    pipeline: str
    definition: str
    payload_id: str
    priority: JobPriority = JobPriority.NORMAL
    state: JobState = JobState.PENDING
    status: JobStatus = JobStatus.HEALTHY
    reason: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exports_created: bool = False  # a Healthy job's exports are recorded (see core.exports)
    run: int = 0  # times admitted; a runner's reports name the run they belong to
    demand: dict[str, float] = field(default_factory=dict)  # cpu, gpu, memory held when running
    evictions: list[dict[str, Any]] = field(default_factory=list)  # at, by, priority, reason

    @property
    def yielded_to(self) -> frozenset[str]:
        """The jobs that evicted this one."""
        return frozenset(str(e["by"]) for e in self.evictions)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self, *, with_definition: bool = False) -> dict[str, Any]:
        out = {**_plain(self), "duration": self.duration, "queued": self.queued_at is not None}
        if not with_definition:
            out.pop("definition")
        return out


class ExportState(_CodedValue):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass
class ExportRecord:
    export_id: str
    job_id: str
    operator: str
    destination: str
    files: list[str]
    state: ExportState = ExportState.PENDING
    attempts: int = 0
    reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    next_attempt_at: float = 0.0
    lease_until: float | None = None
    sent: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class EventRecord:
    """One state change of a job, an operator or an export, in the order the Core made them.

    ``event_id`` grows by one per change (an event log a client can resume from);
    ``subject`` is the job's name, the operator's name or the export's id;
    ``detail`` holds the rest (a job's pipeline and reason, an operator's attempts and
    message, an export's destination, attempts and reason).
    """

    event_id: int
    at: float
    kind: str
    job_id: str
    subject: str
    state: str
    status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)
