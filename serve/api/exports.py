"""Exports of DICOM results to destinations: list, read, resend a Failed one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.records import ExportState
from serve.api.context import Context

__all__ = ["router"]

router = APIRouter(tags=["exports"])


@router.get("/api/v1/exports")
async def exports(
    ctx: Context, job: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    if state:
        state = str(ExportState.parse(state, "query parameter 'state'"))
    return [e.to_dict() for e in await ctx.core(CoreClient.list_exports, job, state)]


@router.get("/api/v1/exports/{export_id}")
async def export(ctx: Context, export_id: str) -> dict[str, Any]:
    return (await ctx.core(CoreClient.get_export, export_id)).to_dict()


@router.post("/api/v1/exports/{export_id}/resend")
async def resend_export(ctx: Context, export_id: str) -> dict[str, Any]:
    """Send a Failed export again (409 unless it is Failed)."""
    return (await ctx.core(CoreClient.resend_export, export_id)).to_dict()
