"""Median and range of a benchmark's repeated figures (the machine is noisy: one run is not a figure)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["ratio_spread", "spread"]


def spread(values: Sequence[float], ndigits: int = 3) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of ``values`` (one per repeat), rounded."""
    if not values:
        raise ValueError("no values: a benchmark figure needs at least one run")
    return {
        "median": round(statistics.median(values), ndigits),
        "min": round(min(values), ndigits),
        "max": round(max(values), ndigits),
        "runs": [round(v, ndigits) for v in values],
    }


def ratio_spread(
    ours: Sequence[float], theirs: Sequence[float], ndigits: int = 2
) -> dict[str, Any]:
    """The spread of per-repeat ratios ``ours[i] / theirs[i]`` (each repeat ran both sides)."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} runs of ours against {len(theirs)} of theirs")
    return spread([a / b for a, b in zip(ours, theirs, strict=True)], ndigits)
