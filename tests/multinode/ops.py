"""Operators of the multi-node test pipelines (importable by Ray workers as
``tests.multinode.ops``; the cluster's job puts the repository root on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from clara_ray.context import OperatorContext
from clara_ray.storage import PayloadView
from clara_ray.volume import Volume


def _record(ctx: OperatorContext, record: str) -> None:
    """Write where this attempt runs to ``<record>/<operator>-<time>-<pid>.json``: the
    operator's own view, to check against what the Core recorded."""
    if not record:
        return
    seen = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [int(g) for g in ray.get_gpu_ids()],
        "ctx_gpu_ids": list(ctx.gpu_ids),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
        "at": time.time(),
    }
    folder = Path(record)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ctx.operator}-{time.time():.6f}-{os.getpid()}.json").write_text(json.dumps(seen))


def make(
    ctx: OperatorContext, payload: PayloadView, seconds: float = 0.0, record: str = ""
) -> dict[str, Any]:
    """Outputs ``volume`` (a small ramp) after sleeping ``seconds``."""
    _record(ctx, record)
    time.sleep(seconds)
    return {"volume": Volume(np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8))}


def where(
    ctx: OperatorContext,
    volume: Volume | None = None,
    payload: PayloadView | None = None,
    seconds: float = 0.0,
    record: str = "",
) -> dict[str, Any]:
    """Records where it runs, sleeps ``seconds``; checks an upstream volume arrived whole."""
    _record(ctx, record)
    if volume is not None:
        assert int(volume.array.sum()) == sum(range(4 * 8 * 8)), "upstream volume corrupted"
    time.sleep(seconds)
    return {}
