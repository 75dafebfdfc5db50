"""A job's result files: the listing, and one file streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from clara_ray.contracts.core_client import CoreClient
from serve.api.context import ApiContext, Context
from serve.api.files import ResultFile, ResultFiles, content_type, result_path

__all__ = ["router"]

router = APIRouter(tags=["results"])

_CHUNK = 1024 * 1024


async def _chunks(ctx: ApiContext, file: ResultFile) -> AsyncIterator[bytes]:
    try:
        while chunk := await ctx.io(file.stream.read, _CHUNK):
            yield chunk
    finally:
        file.stream.close()


@router.get("/api/v1/jobs/{job_id}/results")
async def results(ctx: Context, job_id: str) -> list[dict[str, Any]]:
    """Every result file: its path relative to the job's results and its size in bytes."""
    await ctx.core(CoreClient.get_job, job_id)
    entries = await ctx.io(ResultFiles(ctx.storage, job_id).list)
    return [{"path": e.path, "size": e.size} for e in entries]


@router.get("/api/v1/jobs/{job_id}/results/{path:path}")
async def result(ctx: Context, job_id: str, path: str) -> StreamingResponse:
    """One result file, streamed; 400 for a malformed path, 404 for a missing file."""
    path = result_path(path)
    await ctx.core(CoreClient.get_job, job_id)
    file = await ctx.io(ResultFiles(ctx.storage, job_id).open, path)
    name = path.rsplit("/", 1)[-1]
    return StreamingResponse(
        _chunks(ctx, file),
        media_type=content_type(path),
        headers={
            "Content-Length": str(file.size),
            "Content-Disposition": f"attachment; filename*=utf-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )
