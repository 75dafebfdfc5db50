"""Operators used by the benchmarks only."""

from __future__ import annotations

from typing import Any

import numpy as np

from clara_ray.context import OperatorContext
from clara_ray.storage import PayloadView
from clara_ray.volume import Volume


def ct_volume(ctx: OperatorContext, payload: PayloadView, slices: int = 300) -> dict[str, Any]:
    """Outputs ``volume``: a random int16 CT-sized volume (slices x 512 x 512)."""
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 3000, size=(slices, 512, 512), dtype=np.int16)
    return {"volume": Volume(array, spacing=(1.0, 0.7, 0.7))}


def passthrough(ctx: OperatorContext, volume: Volume) -> dict[str, Any]:
    """Outputs its input ``volume`` unchanged: a stage whose compute is zero."""
    return {"volume": volume}
