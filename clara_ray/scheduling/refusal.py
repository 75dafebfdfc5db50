"""Why a job can never run on a cluster (refused when it is created, not queued forever)."""

from __future__ import annotations

from collections.abc import Mapping

from clara_ray.contracts.resources import DIMENSIONS, ClusterCapacity, Resources

__all__ = ["refusal"]


def refusal(
    demand: Resources, operators: Mapping[str, Resources], capacity: ClusterCapacity
) -> str | None:
    """Why a job of ``demand`` (and these operators' requests) can never run on the cluster,
    or None when it can."""
    short = demand.short_of(capacity.total)
    if short:
        return (
            f"its operators need {demand.describe(short)} at once, the cluster has "
            f"{capacity.total.describe(short)}"
        )
    if capacity.nodes:
        for name, request in operators.items():
            if not any(request.fits_in(node) for node in capacity.nodes):
                largest = Resources(
                    *(max(getattr(n, d) for n in capacity.nodes) for d in DIMENSIONS)
                )
                dims = request.short_of(largest) or tuple(d for d in DIMENSIONS if request.uses(d))
                return (
                    f"operator '{name}' needs {request.describe(dims)} on one node, no node of "
                    f"the cluster has that (the most on one node: {largest.describe(dims)})"
                )
    return None
