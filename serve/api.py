"""The platform's REST API as a Ray Serve application (FastAPI ingress).

Deploy with ``clara-ray up``, ``serve run serve/config.yaml`` or a RayService.
Routes (all JSON):

    GET  /api/v1/health                     liveness and the Core's reachability
    GET  /api/v1/pipelines[/{name}]
    GET  /api/v1/payloads[/{id}]
    GET  /api/v1/jobs[?state=&pipeline=]    GET /api/v1/jobs/{id}   (operators, results)
    GET  /api/v1/jobs/{id}/logs[?operator=]
    POST /api/v1/jobs/{id}/start            POST /api/v1/jobs/{id}/cancel
    POST /api/v1/exports/{id}/resend        send a Failed export again (409 unless Failed)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import ray
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayTaskError

from clara_ray.config.settings import Settings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.errors import ClaraError, ConflictError, NotFoundError
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.storage import Storage

P = ParamSpec("P")
T = TypeVar("T")
api = FastAPI(title="clara-ray", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")


def _status_for(exc: ClaraError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 400


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class ApiServer:
    def __init__(self, settings: dict[str, Any]) -> None:
        keep_patient_data_out_of_logs()
        self.settings = Settings.model_validate(settings)
        self.storage = Storage(self.settings.storage)

    def _actor(self) -> Any:
        try:
            return ray.get_actor(CORE_ACTOR_NAME, namespace=self.settings.ray.namespace)
        except ValueError:
            raise HTTPException(503, "the clara-ray Core is not running") from None

    async def _core(
        self, verb: Callable[Concatenate[CoreClient, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call the Core verb ``verb`` (a :class:`CoreClient` method, named as the actor's)
        awaiting the actor's answer, so that no replica thread blocks on the Core."""
        try:
            result: T = await getattr(self._actor(), verb.__name__).remote(*args, **kwargs)
        except RayTaskError as exc:
            if isinstance(exc.cause, ClaraError):
                raise HTTPException(_status_for(exc.cause), str(exc.cause)) from None
            raise
        return result

    @api.get("/api/v1/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "core": await self._actor().ping.remote()}

    @api.get("/api/v1/pipelines")
    async def pipelines(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in await self._core(CoreClient.list_pipelines)]

    @api.get("/api/v1/pipelines/{name}")
    async def pipeline(self, name: str) -> dict[str, Any]:
        rec = await self._core(CoreClient.get_pipeline, name)
        return rec.to_dict()

    @api.get("/api/v1/payloads")
    async def payloads(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in await self._core(CoreClient.list_payloads)]

    @api.get("/api/v1/payloads/{payload_id}")
    async def payload(self, payload_id: str) -> dict[str, Any]:
        rec = await self._core(CoreClient.get_payload, payload_id)
        return rec.to_dict()

    @api.get("/api/v1/jobs")
    async def jobs(
        self, state: str | None = None, pipeline: str | None = None
    ) -> list[dict[str, Any]]:
        return [j.to_dict() for j in await self._core(CoreClient.list_jobs, state, pipeline)]

    @api.get("/api/v1/jobs/{job_id}")
    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._core(CoreClient.describe_job, job_id)

    @api.get("/api/v1/jobs/{job_id}/logs")
    async def logs(self, job_id: str, operator: str | None = None) -> dict[str, str]:
        await self._core(CoreClient.get_job, job_id)
        return self.storage.read_logs(job_id, operator)

    @api.post("/api/v1/jobs/{job_id}/start")
    async def start(self, job_id: str) -> dict[str, Any]:
        return (await self._core(CoreClient.start_job, job_id)).to_dict()

    @api.post("/api/v1/jobs/{job_id}/cancel")
    async def cancel(self, job_id: str) -> dict[str, Any]:
        return (await self._core(CoreClient.cancel_job, job_id)).to_dict()

    @api.post("/api/v1/exports/{export_id}/resend")
    async def resend_export(self, export_id: str) -> dict[str, Any]:
        rec = await self._core(CoreClient.resend_export, export_id)
        return rec.to_dict()


@api.exception_handler(ValueError)
async def _bad_value(_request: Any, exc: ValueError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


class ApiArgs(BaseModel):
    """Arguments of the application builder (Serve config ``args``)."""

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] | None = Field(
        None, description="A settings tree; default: load_settings()."
    )


def build_app(args: ApiArgs | dict[str, Any]) -> serve.Application:
    from clara_ray.config.settings import load_settings

    parsed = args if isinstance(args, ApiArgs) else ApiArgs.model_validate(args)
    settings = Settings.model_validate(parsed.settings) if parsed.settings else load_settings()
    return ApiServer.bind(settings.model_dump(mode="json"))  # type: ignore[attr-defined]
