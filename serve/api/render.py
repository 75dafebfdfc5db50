"""The render server over HTTP: a job's volumes, their views as PNG, saved view settings.

``GET /api/v1/render/{job}/{volume}/{view}.png`` takes the view's parameters as
query parameters (:class:`~clara_ray.render.request.ViewRequest`: ``axis``,
``index``, ``window``, ``level``, ``preset``, ``slab``, ``azimuth``,
``elevation``, ``overlay``, ``segments``, ``opacity``, ``size``); a bad one is a
400 naming it and its allowed range.
"""

from __future__ import annotations

from typing import Annotated, Any

import ray
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import Response

from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.placement import RENDER_ACTOR_NAME
from clara_ray.contracts.records import JobRecord, JobState
from serve.api.context import ApiContext, Context, call_actor

__all__ = ["router"]

router = APIRouter(tags=["render"])


def _render_server(ctx: ApiContext) -> Any:
    try:
        return ray.get_actor(RENDER_ACTOR_NAME, namespace=ctx.settings.ray.namespace)
    except ValueError:
        raise HTTPException(
            503, "the render server (clara-render) is not running; see setting render.enabled"
        ) from None


async def _job(ctx: ApiContext, job_id: str) -> tuple[JobRecord, bool]:
    """The job (404 if unknown) and whether it has stopped (its results are final)."""
    job = await ctx.core(CoreClient.get_job, job_id)
    return job, job.state is JobState.STOPPED


async def _call(ctx: ApiContext, method: str, *args: Any) -> Any:
    return await call_actor(_render_server(ctx), method, *args)


@router.get("/api/v1/render/{job_id}/volumes")
async def volumes(job_id: str, ctx: Context) -> list[dict[str, Any]]:
    """The job's image series and label maps, with their lengths, overlays and saved views."""
    job, final = await _job(ctx, job_id)
    listed: list[dict[str, Any]] = await _call(ctx, "volumes", job_id, job.payload_id, final)
    return listed


@router.get(
    "/api/v1/render/{job_id}/{volume}/{view}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def view(job_id: str, volume: str, view: str, request: Request, ctx: Context) -> Response:
    """One view of a volume: ``slice``, ``mip``, ``minip`` or ``3d``."""
    job, final = await _job(ctx, job_id)
    params = dict(request.query_params)
    params.pop("access_token", None)
    png: bytes = await _call(ctx, "render", job_id, job.payload_id, volume, view, params, final)
    cache = "private, max-age=3600" if final else "no-cache"
    return Response(png, media_type="image/png", headers={"Cache-Control": cache})


@router.put("/api/v1/render/{job_id}/{volume}/settings")
async def save_settings(
    job_id: str, volume: str, settings: Annotated[dict[str, Any], Body()], ctx: Context
) -> dict[str, Any]:
    """Save the view a volume opens with (mode, axis, index, window, camera, overlay)."""
    job, final = await _job(ctx, job_id)
    saved: dict[str, Any] = await _call(
        ctx, "save_view_settings", job_id, job.payload_id, volume, settings, final
    )
    return saved
