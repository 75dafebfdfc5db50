"""Where the platform's named actors live."""

from __future__ import annotations

from typing import Any

import ray

__all__ = ["CORE_ACTOR_NAME", "RENDER_ACTOR_NAME", "on_head_node", "platform_actor"]

CORE_ACTOR_NAME = "clara-core"
RENDER_ACTOR_NAME = "clara-render"


def on_head_node(head_resource: str) -> dict[str, Any]:
    """Actor options that place it on the node carrying ``head_resource``
    (``scheduling.head_resource``: where the state database, the DICOM spool and the DICOM
    port live); on Ray's head node where no node has it; empty where Ray has neither."""
    resources = ray.cluster_resources()
    for name in (head_resource, "node:__internal_head__"):
        if name in resources:
            return {"resources": {name: 0.001}}
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
