"""Operators used only by the test pipelines (importable by Ray workers as ``tests.ops``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from clara_ray.context import OperatorContext
from clara_ray.storage import PayloadView
from clara_ray.volume import Volume


def make_volume(
    ctx: OperatorContext, payload: PayloadView, shape: list[int] | None = None
) -> dict[str, Any]:
    """Outputs ``volume``: a ramp volume of ``shape`` (default 8x16x16)."""
    dims = tuple(shape or (8, 16, 16))
    ctx.logger.info("making a volume of shape %s from %d payload files", dims, len(payload.files()))
    return {
        "volume": Volume(
            np.arange(np.prod(dims), dtype=np.int16).reshape(dims), spacing=(2.0, 1.0, 1.0)
        )
    }


def add(ctx: OperatorContext, volume: Volume, amount: int = 1) -> dict[str, Any]:
    """Outputs ``volume`` + ``amount``; records whether the input arrived read-only (zero-copy)."""
    zero_copy = not volume.array.flags.writeable
    return {"volume": volume.with_array(volume.array + amount, zero_copy=zero_copy)}


def combine(ctx: OperatorContext, left: Volume, right: Volume) -> dict[str, Any]:
    total = int(left.array.sum() + right.array.sum())
    ctx.results.write_json(
        "combined.json",
        {
            "total": total,
            "zero_copy": [left.metadata.get("zero_copy"), right.metadata.get("zero_copy")],
        },
    )
    return {"total": total}


def whoami(ctx: OperatorContext, payload: PayloadView) -> dict[str, Any]:
    ctx.results.write_json(
        "gpus.json", {"gpu_ids": list(ctx.gpu_ids), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}
    )
    return {}


def sleep(
    ctx: OperatorContext, payload: PayloadView, seconds: float = 30.0, marker: str = ""
) -> dict[str, Any]:
    """Sleeps; writes ``marker`` (a file path) with its pid first, so a test can kill it."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    ctx.logger.info("sleeping %.1f s", seconds)
    time.sleep(seconds)
    if marker:
        Path(marker + ".done").write_text("done")
    return {}


def crash_once(
    ctx: OperatorContext, payload: PayloadView, marker: str, seconds: float = 30.0
) -> dict[str, Any]:
    """First attempt: writes its pid to ``marker`` and sleeps (to be killed); later attempts pass."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(seconds)
    ctx.results.write_json("attempt.json", {"pid": os.getpid()})
    return {}


def fail(ctx: OperatorContext, payload: PayloadView) -> dict[str, Any]:
    raise ValueError("the test operator failed on purpose")


def wrong_outputs(ctx: OperatorContext, payload: PayloadView) -> dict[str, Any]:
    return {"unexpected": 1}
