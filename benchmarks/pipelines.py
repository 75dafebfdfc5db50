"""Reference pipelines on a 300-slice 512x512 CT study (157 MB).

* Loading: the series loader (decode, sort, rescale, geometry) against the
  floor (pydicom reading each file, its pixel bytes copied into a preallocated
  array: no sorting, rescale or geometry), against reading the same files'
  bytes, and against pydicom reading them and stacking ``pixel_array``; warm
  cache, in one process, each repeat running every reader once (their order
  alternating), so the ratios are per repeat.  ``load_figures()`` runs this
  part alone.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.stats import ratio_spread, spread
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


def _floor(files: list[Path]) -> float:
    """The floor: pydicom reads each file and its pixel bytes go into a preallocated array."""
    import numpy as np
    import pydicom

    start = time.perf_counter()
    out = None
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        rows, columns = int(ds.Rows), int(ds.Columns)
        dtype = "<i2" if ds.PixelRepresentation else "<u2"
        if out is None:
            out = np.empty((len(files), rows, columns), dtype)
        out[i] = np.frombuffer(ds.PixelData, dtype, rows * columns).reshape(rows, columns)
    assert out is not None and out.shape[0] == len(files)
    return time.perf_counter() - start


def _pydicom_stack(files: list[Path]) -> float:
    """The plain reference: pydicom reads every file and the pixel arrays are stacked."""
    import numpy as np
    import pydicom

    start = time.perf_counter()
    stacked = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    assert stacked.shape[0] == len(files)
    return time.perf_counter() - start


def _load_runs(
    files: list[Path], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per repeat of each reader; one warm-up round first (page cache,
    allocator).  CPU seconds (user + system of this process) leave out the time spent
    waiting for a core, which on a shared machine is most of the noise."""
    readers: dict[str, Callable[[list[Path]], float]] = {
        "raw": _raw_read,
        "loader": _load,
        "floor": _floor,
        "stack": _pydicom_stack,
    }
    for reader in readers.values():
        reader(files)
    runs: dict[str, list[float]] = {name: [] for name in readers}
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    names = list(readers)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.process_time()
            runs[name].append(readers[name](files))
            cpu[name].append(time.process_time() - start)
    return runs, cpu


def _load_section(files: list[Path], repeats: int) -> dict[str, Any]:
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    runs, cpu = _load_runs(files, repeats)
    return {
        "repeats": repeats,
        "series_loader_seconds": spread(runs["loader"]),
        "floor_seconds": spread(runs["floor"]),
        "ratio_loader_over_floor": ratio_spread(runs["loader"], runs["floor"]),
        "series_loader_cpu_seconds": spread(cpu["loader"]),
        "floor_cpu_seconds": spread(cpu["floor"]),
        "ratio_loader_over_floor_cpu": ratio_spread(cpu["loader"], cpu["floor"]),
        "raw_read_seconds": spread(runs["raw"]),
        "pydicom_read_and_stack_seconds": spread(runs["stack"]),
        "ratio_loader_over_raw_read": ratio_spread(runs["loader"], runs["raw"]),
        "ratio_loader_over_pydicom_stack": ratio_spread(runs["loader"], runs["stack"]),
    }


def load_figures(repeats: int = 7, slices: int = 300) -> dict[str, Any]:
    """The loading part alone, on a fresh sample study of ``slices`` 512x512 slices.

    ``series_loader_seconds`` is :func:`read_series` on the files (sorted
    names, opened streams); ``floor_seconds`` is pydicom reading each file and
    copying its pixel bytes into a preallocated (slices, rows, columns) array.
    Each figure is the median, minimum and maximum over ``repeats`` (wall
    seconds, and CPU seconds for the loader and the floor), and each ratio is
    taken per repeat.
    """
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        files = sorted(write_sample_study(Path(tmp) / "study", slices=slices))
        size = sum(f.stat().st_size for f in files)
        return {
            "benchmark": f"loading a {slices}x512x512 CT series",
            "study_mb": round(size / 1e6, 1),
            **_load_section(files, repeats),
        }


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


def run(repeats: int = 2, load_repeats: int = 7) -> dict[str, Any]:
    """Loading figures over ``load_repeats`` rounds, then each pipeline ``repeats`` times."""
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        study = Path(tmp) / "study"
        files = sorted(write_sample_study(study, slices=300))
        size = sum(f.stat().st_size for f in files)
        return {
            "benchmark": "reference pipelines, 300x512x512 CT study",
            "study_mb": round(size / 1e6, 1),
            "load": _load_section(files, load_repeats),
            "pipelines": _pipelines(study, Path(tmp) / "data", repeats),
        }
