"""The Core's verbs as typed methods, for every caller of the Core actor.

Each method calls the actor's method of the same name (see
:class:`clara_ray.core.actor.CoreActor`); a unit test keeps the three in step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from clara_ray.contracts.records import (
    EventRecord,
    ExportRecord,
    JobRecord,
    PayloadRecord,
    PipelineRecord,
)
from clara_ray.errors import ClaraError

if TYPE_CHECKING:
    from clara_ray.config.dicom import DicomConfig

__all__ = ["CoreClient"]

log = logging.getLogger(__name__)


class CoreClient:
    """Looks the Core up by name and retries calls while it restarts.

    A ClaraError raised inside the Core is raised here as itself (not retried).
    After ``retry_seconds`` without an answer the last error is raised; with 0 the
    first one is.  ``call_timeout`` bounds each wait for an answer (None: no bound).
    ``actor`` is a handle already looked up, used until it fails.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        retry_seconds: float = 120.0,
        *,
        call_timeout: float | None = 60.0,
        actor: Any = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.retry_seconds = retry_seconds
        self.call_timeout = call_timeout
        self._actor = actor

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                if self._actor is None:
                    self._actor = ray.get_actor(self.name, namespace=self.namespace)
                ref = getattr(self._actor, method).remote(*args, **kwargs)
                return ray.get(ref, timeout=self.call_timeout)
            except RayTaskError as exc:
                if isinstance(exc.cause, ClaraError):
                    raise exc.cause from None
                raise
            except (RayActorError, GetTimeoutError, ValueError) as exc:
                if time.monotonic() >= deadline:
                    raise
                log.info("Core unavailable for %s (%s); retrying", method, type(exc).__name__)
                self._actor = None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def create_pipeline(self, definition: str, source: str = "<api>") -> PipelineRecord:
        return self._call("create_pipeline", definition, source)

    def get_pipeline(self, name: str) -> PipelineRecord:
        return self._call("get_pipeline", name)

    def list_pipelines(self) -> list[PipelineRecord]:
        return self._call("list_pipelines")

    def delete_pipeline(self, name: str) -> bool:
        return self._call("delete_pipeline", name)

    def register_payload(
        self,
        payload_id: str,
        *,
        name: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PayloadRecord:
        return self._call(
            "register_payload", payload_id, name=name, source=source, metadata=metadata
        )

    def get_payload(self, ref: str) -> PayloadRecord:
        return self._call("get_payload", ref)

    def list_payloads(self) -> list[PayloadRecord]:
        return self._call("list_payloads")

    def delete_payload(self, ref: str) -> bool:
        return self._call("delete_payload", ref)

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
        return self._call(
            "create_job",
            job_id,
            pipeline,
            payload,
            name=name,
            priority=priority,
            parameters=parameters,
            metadata=metadata,
            runtime_env=runtime_env,
        )

    def get_job(self, job_id: str) -> JobRecord:
        return self._call("get_job", job_id)

    def describe_job(self, job_id: str, *, results: bool = True) -> dict[str, Any]:
        return self._call("describe_job", job_id, results=results)

    def list_jobs(
        self,
        state: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        since: float | None = None,
    ) -> list[JobRecord]:
        return self._call("list_jobs", state, pipeline, status, since)

    def list_events(self, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        return self._call("list_events", after, limit)

    def latest_event_id(self) -> int:
        return self._call("latest_event_id")

    def update_metadata(self, job_id: str, metadata: Mapping[str, str]) -> JobRecord:
        return self._call("update_metadata", job_id, metadata)

    def start_job(self, job_id: str) -> JobRecord:
        return self._call("start_job", job_id)

    def cancel_job(self, job_id: str, reason: str = "canceled by request") -> JobRecord:
        return self._call("cancel_job", job_id, reason)

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
        self._call(
            "operator_started",
            job_id,
            operator,
            started_at=started_at,
            node_id=node_id,
            node_ip=node_ip,
            gpu_ids=gpu_ids,
            run=run,
        )

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
        self._call(
            "operator_stopped",
            job_id,
            operator,
            status=status,
            ended_at=ended_at,
            message=message,
            started_at=started_at,
            node_id=node_id,
            node_ip=node_ip,
            gpu_ids=gpu_ids,
            run=run,
        )

    def job_warning(self, job_id: str, warning: str, run: int | None = None) -> None:
        self._call("job_warning", job_id, warning, run)

    def job_stopped(
        self, job_id: str, status: str, reason: str | None = None, run: int | None = None
    ) -> JobRecord:
        return self._call("job_stopped", job_id, status, reason, run)

    def dicom_put(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return self._call("dicom_put", kind, data)

    def dicom_delete(self, kind: str, key: str) -> bool:
        return self._call("dicom_delete", kind, key)

    def dicom_config(self) -> DicomConfig:
        return self._call("dicom_config")

    def claim_export(
        self,
        worker: str,
        lease_seconds: float = 120.0,
        claim_id: str | None = None,
        destination: str | None = None,
    ) -> dict[str, Any] | None:
        return self._call("claim_export", worker, lease_seconds, claim_id, destination)

    def export_finished(
        self,
        export_id: str,
        *,
        ok: bool,
        reason: str | None = None,
        retry_in: float | None = None,
        sent: int = 0,
    ) -> ExportRecord:
        return self._call(
            "export_finished", export_id, ok=ok, reason=reason, retry_in=retry_in, sent=sent
        )

    def get_export(self, export_id: str) -> ExportRecord:
        return self._call("get_export", export_id)

    def list_exports(
        self, job_id: str | None = None, state: str | None = None
    ) -> list[ExportRecord]:
        return self._call("list_exports", job_id, state)

    def resend_export(self, export_id: str) -> ExportRecord:
        return self._call("resend_export", export_id)
