"""Reference pipelines on a 300-slice 512x512 CT study (157 MB).

* Loading: the series loader (decode, sort, rescale, geometry) against reading
  the same files' bytes, and against pydicom reading them and stacking the
  pixel arrays (no sorting, rescale or geometry), warm cache, in one process.
* Pipelines: each reference pipeline as a real job on a local Ray; its wall
  time from start to end, split into operator compute (time during which at
  least one operator ran, from the Core's records) and platform overhead (the
  rest: scheduling, worker start, object hand-off, reports).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clara_ray.operators.series_loader import read_series
from clara_ray.sample import write_sample_study

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("ct-lung-bone", "ct-liver-ai", "deidentify-and-forward")


def _raw_read(files: list[Path]) -> float:
    start = time.perf_counter()
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            total += len(fh.read())
    assert total > 0
    return time.perf_counter() - start


def _load(files: list[Path]) -> float:
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        volumes = read_series([(f.name, stack.enter_context(open(f, "rb"))) for f in files])
    assert volumes and volumes[0].shape[0] == len(files)
    return time.perf_counter() - start


def _pydicom_stack(files: list[Path]) -> float:
    """The plain reference: pydicom reads every file and the pixel arrays are stacked."""
    import numpy as np
    import pydicom

    start = time.perf_counter()
    stacked = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    assert stacked.shape[0] == len(files)
    return time.perf_counter() - start


def _busy_seconds(operators: list[dict[str, Any]]) -> float:
    """Length of the union of the operators' run intervals."""
    spans = sorted(
        (o["started_at"], o["ended_at"]) for o in operators if o["started_at"] and o["ended_at"]
    )
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop <= end:
            continue
        busy += stop - max(start, end)
        end = stop
    return busy


def _pipelines(study: Path, data: Path, repeats: int) -> dict[str, Any]:
    import ray

    from clara_ray.client import PlatformClient
    from clara_ray.config.settings import load_settings
    from clara_ray.platform import get_or_create_core

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        settings = load_settings(
            env={"CLARA_RAY_DATA_DIR": str(data), "CLARA_RAY_SERVE__ENABLED": "false"}
        )
        client = PlatformClient.of_actor(settings, get_or_create_core(settings))
        payload = client.upload_payload(study).payload_id
        out = {}
        for name in PIPELINES:
            pipeline = client.create_pipeline(ROOT / "pipelines" / f"{name}.yaml").name
            runs = []
            for _ in range(repeats + 1):  # the first run warms the workers
                job = client.create_job(
                    pipeline, payload, parameters={"destination": "none"}, start=True
                )
                described = client.wait_job(job.job_id, timeout=1800)
                if described["status"] != "Healthy":
                    raise RuntimeError(f"{name} failed: {described['reason']}")
                wall = described["ended_at"] - described["started_at"]
                compute = _busy_seconds(described["operators"])
                runs.append((wall, compute))
            runs = runs[1:]
            wall = statistics.median(r[0] for r in runs)
            compute = statistics.median(r[1] for r in runs)
            out[name] = {
                "wall_seconds": round(wall, 2),
                "operator_compute_seconds": round(compute, 2),
                "platform_overhead_seconds": round(wall - compute, 2),
                "overhead_fraction": round((wall - compute) / wall, 3),
            }
        return out
    finally:
        ray.shutdown()


def run(repeats: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        study = Path(tmp) / "study"
        files = sorted(write_sample_study(study, slices=300))
        _raw_read(files)  # warm the page cache
        raw = statistics.median(_raw_read(files) for _ in range(3))
        load = statistics.median(_load(files) for _ in range(3))
        stack = statistics.median(_pydicom_stack(files) for _ in range(3))
        size = sum(f.stat().st_size for f in files)
        return {
            "benchmark": "reference pipelines, 300x512x512 CT study",
            "study_mb": round(size / 1e6, 1),
            "load": {
                "series_loader_seconds": round(load, 3),
                "raw_read_seconds": round(raw, 3),
                "pydicom_read_and_stack_seconds": round(stack, 3),
                "ratio_loader_over_raw_read": round(load / raw, 2),
                "ratio_loader_over_pydicom_stack": round(load / stack, 2),
            },
            "pipelines": _pipelines(study, Path(tmp) / "data", repeats),
        }
