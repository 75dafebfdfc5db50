"""A driver-side client of the platform: the CLI, `clara_ray.run` and the HTTP API use it.

It talks to the Core actor for state and to storage directly for bytes
(uploads and downloads never pass through an actor).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError

from clara_ray.config.settings import Settings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.contracts.records import JobRecord, JobState, PayloadRecord, PipelineRecord
from clara_ray.errors import ClaraError, NotFoundError, PlatformNotRunningError
from clara_ray.pipeline import load_pipeline
from clara_ray.storage import FileEntry, Storage

__all__ = ["PlatformClient", "call_actor", "upload_payload"]

Progress = Callable[[int], None]


def call_actor(actor: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a method of an actor other than the Core (its calls go through
    :class:`CoreClient`) and wait; a ClaraError raised in the actor is raised as itself."""
    try:
        return ray.get(getattr(actor, method).remote(*args, **kwargs))
    except RayTaskError as exc:
        if isinstance(exc.cause, ClaraError):
            raise exc.cause from None
        raise


def upload_payload(
    storage: Storage,
    core: CoreClient,
    source: Path,
    *,
    name: str | None = None,
    origin: str | None = None,
    progress: Progress | None = None,
) -> PayloadRecord:
    """Copy the files below ``source`` (or the file itself) into storage as a new payload and
    register it with the Core, which seals it.  ``origin`` is recorded as the payload's
    source (default: the resolved path of ``source``)."""
    payload_id = uuid.uuid4().hex
    storage.upload_payload(payload_id, Path(source), progress)
    return core.register_payload(
        payload_id, name=name, source=origin or str(Path(source).resolve())
    )


def _job_runtime_env() -> dict[str, Any]:
    """The runtime env of this driver when it runs as a Ray job (its uploaded working dir),
    so that the job's operators can import the code submitted with it."""
    env = ray.get_runtime_context().runtime_env
    return {k: env[k] for k in ("working_dir", "py_modules") if env.get(k)}


class PlatformClient:
    def __init__(self, settings: Settings, core: CoreClient) -> None:
        self.settings = settings
        self.core = core
        self.storage = Storage(settings.storage)

    @classmethod
    def connect(cls, settings: Settings) -> PlatformClient:
        """Attach to the running platform named by ``settings`` (Ray must already be initialised)."""
        try:
            core = ray.get_actor(CORE_ACTOR_NAME, namespace=settings.ray.namespace)
        except ValueError:
            raise PlatformNotRunningError(
                f"no Core actor '{CORE_ACTOR_NAME}' in Ray namespace '{settings.ray.namespace}'; "
                "start the platform with `clara-ray up`"
            ) from None
        return cls.of_actor(settings, core)

    @classmethod
    def of_actor(cls, settings: Settings, core: Any) -> PlatformClient:
        """A client of the Core actor handle ``core``.

        It neither retries nor bounds a call's wait: a driver reports a Core that is down.
        """
        client = CoreClient(
            CORE_ACTOR_NAME, settings.ray.namespace, retry_seconds=0, call_timeout=None, actor=core
        )
        return cls(settings, client)

    # -- pipelines -------------------------------------------------------------
    def create_pipeline(self, path: str | Path) -> PipelineRecord:
        load_pipeline(path)  # validate here first: the same errors, with the local file name
        return self.core.create_pipeline(Path(path).read_text(encoding="utf-8"), str(path))

    def resolve_pipeline(self, ref: str) -> str:
        """A pipeline name; a file path is created (or updated) first."""
        path = Path(ref)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return self.create_pipeline(path).name
        return self.core.get_pipeline(ref).name

    # -- payloads --------------------------------------------------------------
    def upload_payload(
        self, source: str | Path, *, name: str | None = None, progress: Progress | None = None
    ) -> PayloadRecord:
        return upload_payload(self.storage, self.core, Path(source), name=name, progress=progress)

    def resolve_payload(self, ref: str, progress: Progress | None = None) -> str:
        """A payload id; a folder is uploaded as a new payload first."""
        if Path(ref).exists():
            return self.upload_payload(ref, progress=progress).payload_id
        return self.core.get_payload(ref).payload_id

    # -- jobs ------------------------------------------------------------------
    def create_job(
        self,
        pipeline: str,
        payload: str,
        *,
        name: str | None = None,
        priority: str = "normal",
        parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        start: bool = False,
        progress: Progress | None = None,
    ) -> JobRecord:
        pipeline_name = self.resolve_pipeline(pipeline)
        payload_id = self.resolve_payload(payload, progress)
        job: JobRecord = self.core.create_job(
            uuid.uuid4().hex,
            pipeline_name,
            payload_id,
            name=name,
            priority=priority,
            parameters=dict(parameters or {}),
            metadata=dict(metadata or {}),
            runtime_env=_job_runtime_env(),
        )
        if start:
            job = self.core.start_job(job.job_id)
        return job

    def wait_job(
        self, job_id: str, timeout: float | None = None, poll: float = 0.5
    ) -> dict[str, Any]:
        """Describe the job once it has stopped; TimeoutError if it has not by ``timeout``.

        Polls the job record alone (cheap); the full description, with its listing of
        the results, is asked for once, at the end.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job: JobRecord = self.core.get_job(job_id)
            if job.state is JobState.STOPPED:
                described: dict[str, Any] = self.core.describe_job(job_id)
                return described
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll)

    def logs(self, job_id: str, operator: str | None = None) -> dict[str, str]:
        described = self.core.describe_job(job_id, results=False)
        names = [op["name"] for op in described["operators"]]
        if operator is not None and operator not in names:
            raise NotFoundError(
                f"job {job_id} has no operator '{operator}' (operators: {', '.join(names)})"
            )
        return self.storage.read_logs(job_id, operator)

    def download(
        self, job_id: str, operator: str | None, dest: Path, progress: Progress | None = None
    ) -> list[FileEntry]:
        self.core.get_job(job_id)
        return self.storage.download_results(job_id, operator, dest, progress)

    def results_size(self, job_id: str, operator: str | None) -> int:
        return sum(f.size for f in self.storage.list_results(job_id, operator))
