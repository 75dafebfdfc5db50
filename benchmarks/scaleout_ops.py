"""Lightweight stand-in operators for the scale-out benchmark (``benchmarks/scaleout.py``).

Every operator of the generated pipeline runs :func:`stand_in`: it sleeps a fixed time
instead of computing, and returns a small array under each of its declared output names,
so that the DAG, the hand-off of outputs through Ray's object store and the platform's
bookkeeping are those of a real job while the CPU cost is nearly nil (the benchmark
simulates up to three one-CPU nodes on a two-core machine). Workers import it as
``benchmarks.scaleout_ops`` (the repository root is on their PYTHONPATH).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from clara_ray.context import OperatorContext

__all__ = ["OUTPUT_SHAPE", "stand_in"]

OUTPUT_SHAPE = (16, 64, 64)
"""int16: 128 KiB, above Ray's 100 KiB limit for inlining a task's result, so each output
goes through the object store (as a real volume does), yet small."""


def stand_in(
    ctx: OperatorContext,
    seconds: float = 0.5,
    outputs: Sequence[str] = (),
    **inputs: Any,
) -> dict[str, Any]:
    """Sleep ``seconds``, then return an array under each name in ``outputs``.

    ``inputs`` are the operator's declared inputs (the payload view, upstream arrays); an
    upstream array is checked to have arrived whole, the payload is not read.
    """
    for name, value in inputs.items():
        if isinstance(value, np.ndarray) and value.shape != OUTPUT_SHAPE:
            raise ValueError(f"input '{name}' arrived with shape {value.shape}")
    time.sleep(float(seconds))
    return {name: np.full(OUTPUT_SHAPE, 1, dtype=np.int16) for name in outputs}
