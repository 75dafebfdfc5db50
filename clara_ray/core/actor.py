"""The Core as a detached, named Ray actor: a thin adapter over :class:`CoreService`."""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from clara_ray.core.model import JobRecord
from clara_ray.core.service import CoreService, LaunchUnconfirmed
from clara_ray.core.store import SQLiteStore
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.runner.job_runner import RUNNER_HOST_NAME, JobRunnerHost, RunnerConfig
from clara_ray.settings import Settings
from clara_ray.storage import Storage

__all__ = [
    "CORE_ACTOR_NAME",
    "CoreActor",
    "RayRunnerLauncher",
    "get_or_create_core",
    "on_head_node",
]

CORE_ACTOR_NAME = "clara-core"
_RECONCILE_SECONDS = 5.0
_HOST_CALL_SECONDS = 60.0
_LIVENESS_SECONDS = 10.0
_SERVICE_METHODS = (
    "create_pipeline",
    "get_pipeline",
    "list_pipelines",
    "delete_pipeline",
    "register_payload",
    "get_payload",
    "list_payloads",
    "delete_payload",
    "create_job",
    "get_job",
    "describe_job",
    "list_jobs",
    "update_metadata",
    "start_job",
    "cancel_job",
    "operator_started",
    "operator_stopped",
    "job_warning",
    "job_stopped",
    "dicom_put",
    "dicom_delete",
    "dicom_config",
    "claim_export",
    "export_finished",
    "get_export",
    "list_exports",
    "resend_export",
)
log = logging.getLogger(__name__)


class RayRunnerLauncher:
    """Runs jobs in the namespace's :class:`JobRunnerHost` (``clara-runners``).

    The host keeps the final reports it could not deliver in an outbox next to
    the state database (both live on the head node).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def host(self) -> Any:
        """The runner host, created (detached, on the head node) if absent."""
        return JobRunnerHost.options(  # type: ignore[attr-defined]
            name=RUNNER_HOST_NAME,
            namespace=self.settings.ray.namespace,
            lifetime="detached",
            get_if_exists=True,
            **on_head_node(),
        ).remote(
            str(self.settings.database.parent / "runner-outbox.db"),
            CORE_ACTOR_NAME,
            self.settings.ray.namespace,
        )

    def launch(self, job: JobRecord) -> None:
        config = RunnerConfig(
            job_id=job.job_id,
            job_name=job.name,
            pipeline=job.pipeline,
            definition=job.definition,
            payload_id=job.payload_id,
            parameters=job.parameters,
            storage_uri=self.settings.storage,
            namespace=self.settings.ray.namespace,
            core_name=CORE_ACTOR_NAME,
            report_retry_seconds=self.settings.core.report_retry_seconds,
            default_operator_timeout=self.settings.core.default_operator_timeout,
            gpu_fallback=self.settings.core.gpu_fallback,
            runtime_env=job.runtime_env or None,
        )
        try:
            ray.get(self.host().start.remote(config), timeout=_HOST_CALL_SECONDS)
        except (GetTimeoutError, RayActorError) as exc:  # the start may still happen
            raise LaunchUnconfirmed(f"{type(exc).__name__}: {exc}") from exc

    def _existing_host(self) -> Any:
        try:
            return ray.get_actor(RUNNER_HOST_NAME, namespace=self.settings.ray.namespace)
        except ValueError:
            return None

    def running_jobs(self) -> set[str] | None:
        """The host's jobs (running, or holding a final report); an empty set when there is
        no host at all; None when the host does not answer in time (unknown)."""
        host = self._existing_host()
        if host is None:
            return set()
        try:
            return set(ray.get(host.jobs.remote(), timeout=_LIVENESS_SECONDS))
        except RayError as exc:
            log.warning("runner host did not say which jobs it runs; deciding nothing: %s", exc)
            return None

    def cancel(self, job_id: str) -> None:
        host = self._existing_host()
        if host is not None:
            host.cancel.remote(job_id)


class CoreActor:
    """Reloads all state from the store in ``__init__``, so Ray may restart it at any time."""

    def __init__(self, settings: Settings) -> None:
        keep_patient_data_out_of_logs()
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self.service = CoreService(
            SQLiteStore(settings.database),
            Storage(settings.storage),
            launcher := RayRunnerLauncher(settings),
            max_concurrent_jobs=settings.core.max_concurrent_jobs,
        )
        self.service.dicom_seed(settings.dicom)
        launcher.host()  # started now, so that the first job need not wait for its process
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
        }

    def settings_dump(self) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")


def _delegate(name: str) -> Any:
    def method(self: CoreActor, *args: Any, **kwargs: Any) -> Any:
        with self.service._lock:  # one call at a time, also against the reconcile loop
            return getattr(self.service, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(CoreService, name).__doc__
    return method


for _name in _SERVICE_METHODS:
    setattr(CoreActor, _name, _delegate(_name))

CoreActorRemote = ray.remote(CoreActor)


def get_or_create_core(settings: Settings) -> Any:
    """The namespace's Core actor, created (detached, restartable) if absent."""
    options: dict[str, Any] = {
        "name": CORE_ACTOR_NAME,
        "namespace": settings.ray.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
    }
    return CoreActorRemote.options(**options, **on_head_node()).remote(settings)


def on_head_node() -> dict[str, Any]:
    """Actor options that place it on the head node (where the state database, the DICOM
    spool and the DICOM port live); empty where Ray has no head-node resource."""
    if "node:__internal_head__" in ray.cluster_resources():
        return {"resources": {"node:__internal_head__": 0.001}}
    return {}
