"""The REST API's FastAPI app, one per replica, and the Serve deployment that runs it.

Each resource has its router (``serve.api.<resource>``); every handler reaches the
settings, storage and the Core through :class:`~serve.api.context.ApiContext`.
Errors become JSON ``{"detail": ...}``: ClaraErrors by kind (404 unknown, 409
conflict, else 400), a pipeline's problems as a list, other ValueErrors 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from clara_ray.config.settings import Settings
from clara_ray.errors import (
    ClaraError,
    ConflictError,
    NotFoundError,
    PipelineValidationError,
    UnschedulableError,
)
from clara_ray.phi import keep_patient_data_out_of_logs
from serve.api import (
    dashboard,
    dicom,
    events,
    exports,
    health,
    jobs,
    payloads,
    pipelines,
    render,
    results,
)
from serve.api.context import ApiContext
from serve.auth import BearerAuth

__all__ = ["ApiServer", "create_app"]

ROUTERS = (health, pipelines, payloads, jobs, results, exports, dicom, events, render, dashboard)


def _status_for(exc: ClaraError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UnschedulableError):
        return 422
    return 400


async def _clara_error(_request: Request, exc: ClaraError) -> JSONResponse:
    if isinstance(exc, PipelineValidationError):
        return JSONResponse({"detail": exc.problems}, status_code=400)
    return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc))


async def _bad_value(_request: Request, exc: ValueError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


def create_app(settings: Settings) -> FastAPI:
    """The API app over ``settings``, behind the bearer token when one is set."""
    app = FastAPI(
        title="clara-ray", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    app.state.context = ApiContext(settings)
    for module in ROUTERS:
        app.include_router(module.router)
    app.exception_handler(ClaraError)(_clara_error)
    app.exception_handler(ValueError)(_bad_value)
    token = settings.serve.api_token
    app.add_middleware(BearerAuth, token=lambda: token, error_key="detail")
    return app


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ApiServer:
    """The REST API on Ray Serve; its app is built in the replica, from the settings."""

    def __init__(self, settings: Settings) -> None:
        keep_patient_data_out_of_logs()
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings)
