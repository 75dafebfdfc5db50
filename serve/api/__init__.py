"""The platform's REST API as a Ray Serve application (FastAPI ingress).

Deploy with ``clara-ray up``, ``serve run serve/config.yaml`` or a RayService
(import path ``serve.api:build_app``).  Routes (JSON unless said; see README.md and
``/api/docs``):

    GET    /api/v1/health                           open without a token
    GET    /api/v1/pipelines[/{name}]   POST /api/v1/pipelines (YAML)   DELETE /api/v1/pipelines/{name}
    GET    /api/v1/payloads[/{id}]      POST /api/v1/payloads (multipart) DELETE /api/v1/payloads/{id}
    GET    /api/v1/jobs[?state=&status=&pipeline=&since=]   POST /api/v1/jobs
    GET    /api/v1/jobs/{id}            GET /api/v1/jobs/{id}/logs[?operator=]
    POST   /api/v1/jobs/{id}/start      POST /api/v1/jobs/{id}/cancel
    GET    /api/v1/jobs/{id}/results    GET /api/v1/jobs/{id}/results/{path}  (the file)
    GET    /api/v1/exports[?job=&state=]  GET /api/v1/exports/{id}  POST /api/v1/exports/{id}/resend
    GET|PUT /api/v1/dicom/{aetitles|sources|destinations}   DELETE /api/v1/dicom/{kind}/{key}
    GET    /api/v1/events               Server-Sent Events of job, operator and export changes
    GET    /api/v1/render/{job}/volumes   GET /api/v1/render/{job}/{volume}/{view}.png
    PUT    /api/v1/render/{job}/{volume}/settings   (a volume's saved view)
    GET    /  and /static/*             the dashboard

With ``serve.api_token`` set every route but the health check needs
``Authorization: Bearer <token>`` (:mod:`serve.auth`); without one the builder refuses
a ``serve.host`` other than loopback.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from clara_ray.config.settings import Settings, load_settings
from clara_ray.serving import check_bind
from serve.api.app import ApiServer, create_app

__all__ = ["ApiArgs", "ApiServer", "build_app", "create_app"]


class ApiArgs(BaseModel):
    """Arguments of the application builder (Serve config ``args``)."""

    model_config = ConfigDict(extra="forbid")
    settings: Settings | None = Field(
        None, description="A settings tree (or Settings); default: load_settings()."
    )


def build_app(args: ApiArgs | dict[str, Any]) -> serve.Application:
    """The API application; ConfigError for a non-loopback ``serve.host`` without a token."""
    parsed = args if isinstance(args, ApiArgs) else ApiArgs.model_validate(args)
    settings = parsed.settings or load_settings()
    check_bind(settings.serve)
    return ApiServer.bind(settings)  # type: ignore[attr-defined]
