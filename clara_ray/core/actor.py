"""The Core as a detached, named Ray actor: a thin adapter over :class:`CoreService`.

Each public method is one Core verb, called through
:class:`clara_ray.contracts.core_client.CoreClient`; it runs under the service
lock, so calls run one at a time, also against the reconcile loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ray

from clara_ray.config.settings import Settings
from clara_ray.contracts.launcher import RunnerLauncher
from clara_ray.contracts.placement import CORE_ACTOR_NAME, on_head_node, platform_actor
from clara_ray.contracts.records import (
    EventRecord,
    ExportRecord,
    JobPriority,
    JobRecord,
    PayloadRecord,
    PipelineRecord,
)
from clara_ray.core.metrics import CoreMetrics
from clara_ray.core.scheduler import AdmissionPolicy, describe_capacity
from clara_ray.core.service import CoreService
from clara_ray.core.store import SQLiteStore
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.storage import Storage

if TYPE_CHECKING:
    from clara_ray.config.dicom import DicomConfig

__all__ = ["CoreActor", "LauncherFactory", "create_core"]

LauncherFactory = Callable[[Settings], RunnerLauncher]
"""Builds the launcher the Core runs jobs with; it may start what the launcher needs."""
_RECONCILE_SECONDS = 5.0
log = logging.getLogger(__name__)


class CoreActor:
    """Reloads all state from the store in ``__init__``, so Ray may restart it at any time."""

    def __init__(self, settings: Settings, launcher_factory: LauncherFactory) -> None:
        keep_patient_data_out_of_logs()
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self.service = CoreService(
            SQLiteStore(settings.database),
            Storage(settings.storage),
            launcher_factory(settings),
            policy=AdmissionPolicy(
                max_jobs=settings.core.max_concurrent_jobs,
                evicting=tuple(JobPriority(p) for p in settings.scheduling.evicting_priorities),
                min_run_before_reeviction=settings.scheduling.min_run_before_reeviction,
                gpu_fallback=settings.core.gpu_fallback,
            ),
            event_retention=settings.core.event_retention,
            on_evicted=CoreMetrics().job_evicted,
        )
        self.service.dicom.dicom_seed(settings.dicom)
        self.service.recover()
        self._stop = threading.Event()
        threading.Thread(
            target=self._reconcile_loop, name="clara-core-reconcile", daemon=True
        ).start()
        log.info("Core started with state in %s", settings.database)

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(_RECONCILE_SECONDS):
            try:
                self.service.recover()
            except Exception:  # keep reconciling; a transient Ray error must not stop it
                log.exception("Core reconcile failed")

    def ping(self) -> dict[str, Any]:
        return {
            "database": str(self.settings.database),
            "storage": self.settings.storage,
            "max_concurrent_jobs": self.settings.core.max_concurrent_jobs,
            "capacity": describe_capacity(self.service.scheduler.capacity),
        }

    def settings_dump(self) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")

    def create_pipeline(self, definition: str, source: str = "<api>") -> PipelineRecord:
        with self.service._lock:
            return self.service.pipelines.create_pipeline(definition, source)

    def get_pipeline(self, name: str) -> PipelineRecord:
        with self.service._lock:
            return self.service.pipelines.get_pipeline(name)

    def list_pipelines(self) -> list[PipelineRecord]:
        with self.service._lock:
            return self.service.pipelines.list_pipelines()

    def delete_pipeline(self, name: str) -> bool:
        with self.service._lock:
            return self.service.pipelines.delete_pipeline(name)

    def register_payload(
        self,
        payload_id: str,
        *,
        name: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PayloadRecord:
        with self.service._lock:
            return self.service.payloads.register_payload(
                payload_id, name=name, source=source, metadata=metadata
            )

    def get_payload(self, ref: str) -> PayloadRecord:
        with self.service._lock:
            return self.service.payloads.get_payload(ref)

    def list_payloads(self) -> list[PayloadRecord]:
        with self.service._lock:
            return self.service.payloads.list_payloads()

    def delete_payload(self, ref: str) -> bool:
        with self.service._lock:
            return self.service.payloads.delete_payload(ref)

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
        # the service takes the lock itself: a refusal re-reads the cluster outside it
        return self.service.create_job(
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
        with self.service._lock:
            return self.service.get_job(job_id)

    def describe_job(self, job_id: str, *, results: bool = True) -> dict[str, Any]:
        with self.service._lock:
            return self.service.describe_job(job_id, results=results)

    def list_jobs(
        self,
        state: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        since: float | None = None,
    ) -> list[JobRecord]:
        with self.service._lock:
            return self.service.list_jobs(state, pipeline, status, since)

    def list_events(self, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        with self.service._lock:
            return self.service.events.list_events(after, limit)

    def latest_event_id(self) -> int:
        with self.service._lock:
            return self.service.events.latest_event_id()

    def update_metadata(self, job_id: str, metadata: Mapping[str, str]) -> JobRecord:
        with self.service._lock:
            return self.service.update_metadata(job_id, metadata)

    def start_job(self, job_id: str) -> JobRecord:
        with self.service._lock:
            return self.service.start_job(job_id)

    def cancel_job(self, job_id: str, reason: str = "canceled by request") -> JobRecord:
        with self.service._lock:
            return self.service.cancel_job(job_id, reason)

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
        with self.service._lock:
            return self.service.operator_started(
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
        with self.service._lock:
            return self.service.operator_stopped(
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
        with self.service._lock:
            return self.service.job_warning(job_id, warning, run)

    def job_stopped(
        self, job_id: str, status: str, reason: str | None = None, run: int | None = None
    ) -> JobRecord:
        with self.service._lock:
            return self.service.job_stopped(job_id, status, reason, run)

    def dicom_put(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.service._lock:
            return self.service.dicom.dicom_put(kind, data)

    def dicom_delete(self, kind: str, key: str) -> bool:
        with self.service._lock:
            return self.service.dicom.dicom_delete(kind, key)

    def dicom_config(self) -> DicomConfig:
        with self.service._lock:
            return self.service.dicom.dicom_config()

    def claim_export(
        self,
        worker: str,
        lease_seconds: float = 120.0,
        claim_id: str | None = None,
        destination: str | None = None,
    ) -> dict[str, Any] | None:
        with self.service._lock:
            return self.service.exports.claim_export(worker, lease_seconds, claim_id, destination)

    def export_finished(
        self,
        export_id: str,
        *,
        ok: bool,
        reason: str | None = None,
        retry_in: float | None = None,
        sent: int = 0,
    ) -> ExportRecord:
        with self.service._lock:
            return self.service.exports.export_finished(
                export_id, ok=ok, reason=reason, retry_in=retry_in, sent=sent
            )

    def get_export(self, export_id: str) -> ExportRecord:
        with self.service._lock:
            return self.service.exports.get_export(export_id)

    def list_exports(
        self, job_id: str | None = None, state: str | None = None
    ) -> list[ExportRecord]:
        with self.service._lock:
            return self.service.exports.list_exports(job_id, state)

    def resend_export(self, export_id: str) -> ExportRecord:
        with self.service._lock:
            return self.service.exports.resend_export(export_id)


CoreActorRemote = ray.remote(CoreActor)


def create_core(settings: Settings, launcher_factory: LauncherFactory) -> Any:
    """The namespace's Core actor, created (detached, restartable) if absent."""
    options = platform_actor(CORE_ACTOR_NAME, settings.ray.namespace)
    head = on_head_node(settings.scheduling.head_resource)
    return CoreActorRemote.options(**options, num_cpus=0, **head).remote(settings, launcher_factory)
