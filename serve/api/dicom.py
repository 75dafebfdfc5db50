"""The DICOM adapter's configuration: AE titles, sources and destinations (kept by the Core)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from clara_ray.contracts.core_client import CoreClient
from clara_ray.errors import NotFoundError
from serve.api.context import Context

__all__ = ["KINDS", "router"]

router = APIRouter(tags=["dicom"])

KINDS = {"aetitles": "aetitle", "sources": "source", "destinations": "destination"}
"""The kinds in the URL, and the Core's name of each."""


def _kind(kind: str) -> str:
    try:
        return KINDS[kind]
    except KeyError:
        raise NotFoundError(
            f"no DICOM configuration {kind!r}; expected one of: {', '.join(KINDS)}"
        ) from None


@router.get("/api/v1/dicom/{kind}")
async def entries(ctx: Context, kind: str) -> list[dict[str, Any]]:
    _kind(kind)
    config = await ctx.core(CoreClient.dicom_config)
    return [entry.model_dump(mode="json") for entry in getattr(config, kind)]


@router.put("/api/v1/dicom/{kind}")
async def put_entry(
    ctx: Context, kind: str, entry: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Create or replace an entry; the Core validates it (400 with its message)."""
    return await ctx.core(CoreClient.dicom_put, _kind(kind), entry)


@router.delete("/api/v1/dicom/{kind}/{key}")
async def delete_entry(ctx: Context, kind: str, key: str) -> dict[str, Any]:
    """Delete an entry: an AE title, a source's ``AE@host`` or a destination's name."""
    await ctx.core(CoreClient.dicom_delete, _kind(kind), key)
    return {"deleted": key}
