"""The dashboard: a page and its scripts, served from the package (no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

__all__ = ["router"]

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_FILES = Path(__file__).resolve().parent.parent / "dashboard"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(_FILES / "index.html", media_type=_TYPES[".html"])


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    path = _FILES / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise HTTPException(404, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix])
