"""Pipelines: list, read, create or replace (the YAML as the body), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from clara_ray.contracts.core_client import CoreClient
from serve.api.context import Context

__all__ = ["router"]

router = APIRouter(tags=["pipelines"])

YAML_TYPES = frozenset({"text/yaml", "application/x-yaml", "application/yaml", "text/plain"})
_MAX_DEFINITION_BYTES = 1024 * 1024


async def _definition(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in YAML_TYPES:
        raise HTTPException(
            415,
            f"Content-Type {media or 'none'!r}: expected one of {', '.join(sorted(YAML_TYPES))}",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_DEFINITION_BYTES:
            raise HTTPException(
                413, f"a pipeline definition is at most {_MAX_DEFINITION_BYTES} bytes"
            )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the pipeline definition is not UTF-8 text") from None


@router.get("/api/v1/pipelines")
async def pipelines(ctx: Context) -> list[dict[str, Any]]:
    return [p.to_dict() for p in await ctx.core(CoreClient.list_pipelines)]


@router.post(
    "/api/v1/pipelines",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string"}} for t in sorted(YAML_TYPES)},
        }
    },
)
async def create_pipeline(ctx: Context, request: Request) -> dict[str, Any]:
    """Store a pipeline (same name: replaced, version + 1); 400 lists every problem."""
    definition = await _definition(request)
    return (await ctx.core(CoreClient.create_pipeline, definition, "<api>")).to_dict()


@router.get("/api/v1/pipelines/{name}")
async def pipeline(ctx: Context, name: str) -> dict[str, Any]:
    return (await ctx.core(CoreClient.get_pipeline, name)).to_dict()


@router.delete("/api/v1/pipelines/{name}")
async def delete_pipeline(ctx: Context, name: str) -> dict[str, Any]:
    await ctx.core(CoreClient.delete_pipeline, name)
    return {"deleted": name}
