"""``GET /api/v1/health``: liveness and the Core's reachability (open without a token)."""

from __future__ import annotations

from typing import Any

import ray
from fastapi import APIRouter

from serve.api.context import Context

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/api/v1/health")
async def health(ctx: Context) -> dict[str, Any]:
    """Liveness, the Core's answer, whether the other routes need the API token (the
    dashboard asks for it before its first call), and the Ray dashboard's address."""
    dashboard = ray.worker.get_dashboard_url()
    return {
        "status": "ok",
        "core": await ctx.actor().ping.remote(),
        "token_required": ctx.settings.serve.api_token is not None,
        "ray_dashboard": f"http://{dashboard}" if dashboard else None,
    }
