"""What the Ray cluster holds, read from its alive nodes (the edge where Ray is asked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray

from clara_ray.config.settings import CapacitySettings
from clara_ray.contracts.resources import ClusterCapacity, Resources

__all__ = ["alive_nodes", "cluster_capacity", "node_resources", "runnable_somewhere"]


def alive_nodes() -> list[dict[str, float]]:
    """The Ray resources of each alive node (``CPU``, ``GPU``, ``memory``, custom ones)."""
    return [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]


def node_resources(resources: Mapping[str, float]) -> Resources:
    return Resources(
        cpu=float(resources.get("CPU", 0.0)),
        gpu=float(resources.get("GPU", 0.0)),
        memory=float(resources.get("memory", 0.0)),
    )


def cluster_capacity(
    nodes: Sequence[Mapping[str, float]], configured: CapacitySettings
) -> ClusterCapacity:
    """The nodes' total and shapes; where ``configured`` (``scheduling.capacity``) names an
    amount, the cluster can grow to it and node shapes are not known in advance."""
    shapes = tuple(node_resources(n) for n in nodes)
    measured = Resources.total(shapes)
    overrides = {"cpu": configured.cpu, "gpu": configured.gpu, "memory": configured.memory_bytes}
    if all(v is None for v in overrides.values()):
        return ClusterCapacity(measured, shapes)
    total = Resources(
        **{d: float(v) if v is not None else getattr(measured, d) for d, v in overrides.items()}
    )
    return ClusterCapacity(total, ())


def runnable_somewhere(request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some node's resources (totals, not what is free now) cover ``request``."""
    return any(
        all(float(node.get(name, 0.0)) + 1e-9 >= amount for name, amount in request.items())
        for node in nodes
    )
