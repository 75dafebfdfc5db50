"""Payloads: list, read, upload (DICOM files and/or zips, multipart), delete."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from clara_ray.client import upload_payload
from clara_ray.contracts.core_client import CoreClient
from clara_ray.errors import ConflictError, NotFoundError
from serve.api.context import ApiContext, Context
from serve.api.uploads import MultipartSpool, UploadTooLargeError

__all__ = ["router"]

router = APIRouter(tags=["payloads"])
log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "DICOM files and/or zips (their members are extracted).",
                        },
                        "name": {"type": "string", "description": "A name for the payload."},
                    },
                }
            }
        },
    }
}


def _too_large(limit_mb: int) -> HTTPException:
    return HTTPException(413, f"the upload exceeds serve.max_upload_mb ({limit_mb} MiB)")


async def _check_name_free(ctx: ApiContext, name: str) -> None:
    try:
        existing = await ctx.core(CoreClient.get_payload, name)
    except NotFoundError:
        return
    raise ConflictError(f"a payload named '{name}' already exists ({existing.payload_id})")


@router.get("/api/v1/payloads")
async def payloads(ctx: Context) -> list[dict[str, Any]]:
    return [p.to_dict() for p in await ctx.core(CoreClient.list_payloads)]


@router.post("/api/v1/payloads", status_code=201, openapi_extra=_UPLOAD_BODY)
async def create_payload(ctx: Context, request: Request) -> dict[str, Any]:
    """Upload files as a new sealed payload; 413 beyond ``serve.max_upload_mb``."""
    limit_mb = ctx.settings.serve.max_upload_mb
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise HTTPException(415, f"Content-Type {media or 'none'!r}: expected multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_mb * _MIB:
        raise _too_large(limit_mb)
    folder = Path(await ctx.io(tempfile.mkdtemp, prefix="clara-upload-"))
    try:
        spool = MultipartSpool(request.headers.get("content-type"), folder, limit_mb * _MIB)
        async for chunk in request.stream():
            await ctx.io(spool.feed, chunk)
        upload = await ctx.io(spool.finish)
        log.info("payload upload received: %d files, %d bytes", upload.files, upload.bytes)
        if upload.name:
            await _check_name_free(ctx, upload.name)
        record = await ctx.io(
            upload_payload,
            ctx.storage,
            ctx.client(),
            upload.folder,
            name=upload.name,
            origin="<api upload>",
        )
    except UploadTooLargeError:
        raise _too_large(limit_mb) from None
    finally:
        await ctx.io(shutil.rmtree, folder, ignore_errors=True)
    return record.to_dict()


@router.get("/api/v1/payloads/{payload_id}")
async def payload(ctx: Context, payload_id: str) -> dict[str, Any]:
    return (await ctx.core(CoreClient.get_payload, payload_id)).to_dict()


@router.delete("/api/v1/payloads/{payload_id}")
async def delete_payload(ctx: Context, payload_id: str) -> dict[str, Any]:
    """Delete a payload and its files (409 while unfinished jobs use it)."""
    await ctx.core(CoreClient.delete_payload, payload_id)
    return {"deleted": payload_id}
