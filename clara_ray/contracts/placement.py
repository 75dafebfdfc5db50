"""Where the platform's named actors live."""

from __future__ import annotations

from typing import Any

import ray

__all__ = ["CORE_ACTOR_NAME", "RENDER_ACTOR_NAME", "on_head_node", "platform_actor"]

CORE_ACTOR_NAME = "clara-core"
RENDER_ACTOR_NAME = "clara-render"


def on_head_node() -> dict[str, Any]:
    """Actor options that place it on the head node (where the state database, the DICOM
    spool and the DICOM port live); empty where Ray has no head-node resource."""
    if "node:__internal_head__" in ray.cluster_resources():
        return {"resources": {"node:__internal_head__": 0.001}}
    return {}


def platform_actor(name: str, namespace: str) -> dict[str, Any]:
    """Actor options of a platform actor: named, detached, created once (``get_if_exists``),
    restarted whenever it dies, its calls retried across restarts."""
    return {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
    }
