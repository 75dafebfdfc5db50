"""How the Core starts jobs: in the namespace's runner host actor."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from clara_ray.config.settings import Settings
from clara_ray.contracts.launcher import LaunchUnconfirmed
from clara_ray.contracts.placement import CORE_ACTOR_NAME, on_head_node
from clara_ray.contracts.records import JobRecord
from clara_ray.contracts.resources import ClusterCapacity
from clara_ray.runner.cluster import alive_nodes, cluster_capacity
from clara_ray.runner.job_runner import RUNNER_HOST_NAME, JobRunnerHost, RunnerConfig

__all__ = ["RayRunnerLauncher"]

_HOST_CALL_SECONDS = 60.0
_LIVENESS_SECONDS = 10.0
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
            **on_head_node(self.settings.scheduling.head_resource),
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
            run=job.run,
            unschedulable_timeout=self.settings.scheduling.unschedulable_timeout,
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

    def cancel(self, job_id: str, run: int | None = None) -> None:
        host = self._existing_host()
        if host is not None:
            host.cancel.remote(job_id, run)

    def cluster_capacity(self) -> ClusterCapacity | None:
        """The alive nodes' resources (with ``scheduling.capacity`` over them); None when
        Ray does not answer."""
        try:
            nodes = alive_nodes()
        except RayError as exc:
            log.warning("the cluster's resources could not be read; deciding nothing: %s", exc)
            return None
        return cluster_capacity(nodes, self.settings.scheduling.capacity)
