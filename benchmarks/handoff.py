"""Operator hand-off: the platform's object store against Clara's shared-disk hand-off.

A 300x512x512 int16 volume (157 MB) goes through a chain of 4 no-op operators.
Platform: a real job on a local Ray; per-operator overhead is the chain's wall
time (first no-op start to last no-op end, from the Core's records) / 4.
Disk (what Clara's containers did through their mounted volumes): per hop,
write the volume to a file, fsync, read it back.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHAIN = 4
ROOT = Path(__file__).resolve().parent.parent
PIPELINE = """
api-version: 0.4.0
name: bench-handoff
operators:
  - name: source
    run: benchmarks.ops:ct_volume
    input: [{name: payload}]
    output: [{name: volume}]
""" + "".join(
    f"""
  - name: noop{i}
    run: benchmarks.ops:passthrough
    input: [{{from: {"source" if i == 1 else f"noop{i - 1}"}, name: volume}}]
    output: [{{name: volume}}]
"""
    for i in range(1, CHAIN + 1)
)


def _disk_hop(array: np.ndarray, folder: Path) -> float:
    path = folder / "volume.npy"
    start = time.perf_counter()
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    loaded = np.load(path)
    elapsed = time.perf_counter() - start
    assert loaded.shape == array.shape
    path.unlink()
    return elapsed


def _platform_runs(repeats: int) -> list[float]:
    import ray

    from clara_ray.client import PlatformClient
    from clara_ray.config.settings import load_settings
    from clara_ray.platform import get_or_create_core

    with tempfile.TemporaryDirectory() as tmp:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=2 * 1024**3,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
        try:
            settings = load_settings(
                env={"CLARA_RAY_DATA_DIR": tmp, "CLARA_RAY_SERVE__ENABLED": "false"}
            )
            client = PlatformClient.of_actor(settings, get_or_create_core(settings))
            (Path(tmp) / "p").mkdir()
            (Path(tmp) / "p" / "x").write_text("x")
            pipeline = Path(tmp) / "bench.yaml"
            pipeline.write_text(PIPELINE)
            spans = []
            for _ in range(repeats + 1):  # the first run warms the workers
                job = client.create_job(str(pipeline), str(Path(tmp) / "p"), start=True)
                described = client.wait_job(job.job_id, timeout=600)
                if described["status"] != "Healthy":
                    raise RuntimeError(f"benchmark job failed: {described['reason']}")
                ops = {o["name"]: o for o in described["operators"]}
                spans.append(ops[f"noop{CHAIN}"]["ended_at"] - ops["noop1"]["started_at"])
            return spans[1:]
        finally:
            ray.shutdown()


def run(repeats: int = 3) -> dict[str, Any]:
    array = np.random.default_rng(0).integers(-1024, 3000, size=(300, 512, 512), dtype=np.int16)
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        disk = [sum(_disk_hop(array, Path(folder)) for _ in range(CHAIN)) for _ in range(repeats)]
    platform = _platform_runs(repeats)
    per_op_platform = statistics.median(platform) / CHAIN
    per_op_disk = statistics.median(disk) / CHAIN
    return {
        "benchmark": "operator hand-off, 300x512x512 int16 (157 MB), chain of 4 no-op operators",
        "platform_seconds_per_operator": round(per_op_platform, 4),
        "disk_seconds_per_operator": round(per_op_disk, 4),
        "ratio_disk_over_platform": round(per_op_disk / per_op_platform, 2),
    }
