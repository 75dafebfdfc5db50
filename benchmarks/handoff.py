"""Operator hand-off: the platform's object store against Clara's shared-disk hand-off.

A 300x512x512 int16 volume (157 MB) goes through a chain of 4 no-op operators.
Platform: a real job on a local Ray; per-operator overhead is the chain's wall
time (first no-op start to last no-op end, from the Core's records) / 4.
Disk (what Clara's containers did through their mounted volumes): per hop,
write the volume to a file, fsync, read it back.  Each round runs the disk chain, then
a platform job (after one job that warms the workers); figures are the median and range
over the rounds, the ratio each round's disk time over its platform time.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import ratio_spread, spread

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


def _interleaved_runs(repeats: int, disk_run: Callable[[], float]) -> list[tuple[float, float]]:
    """``repeats`` rounds of (disk chain seconds, platform chain seconds), each round
    running both sides back to back so that drift in the machine's load hits both."""
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
            rounds = []
            for i in range(repeats + 1):  # the first platform run warms the workers
                disk = disk_run() if i else 0.0
                job = client.create_job(str(pipeline), str(Path(tmp) / "p"), start=True)
                described = client.wait_job(job.job_id, timeout=600)
                if described["status"] != "Healthy":
                    raise RuntimeError(f"benchmark job failed: {described['reason']}")
                ops = {o["name"]: o for o in described["operators"]}
                rounds.append((disk, ops[f"noop{CHAIN}"]["ended_at"] - ops["noop1"]["started_at"]))
            return rounds[1:]
        finally:
            ray.shutdown()


def run(repeats: int = 5) -> dict[str, Any]:
    """Each figure per operator, median and range over ``repeats`` interleaved rounds; the
    ratio is each round's disk time over its platform time."""
    array = np.random.default_rng(0).integers(-1024, 3000, size=(300, 512, 512), dtype=np.int16)
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        rounds = _interleaved_runs(
            repeats, lambda: sum(_disk_hop(array, Path(folder)) for _ in range(CHAIN))
        )
    disk = [d / CHAIN for d, _ in rounds]
    platform = [p / CHAIN for _, p in rounds]
    return {
        "benchmark": "operator hand-off, 300x512x512 int16 (157 MB), chain of 4 no-op operators",
        "repeats": repeats,
        "platform_seconds_per_operator": spread(platform, 4),
        "disk_seconds_per_operator": spread(disk, 4),
        "ratio_disk_over_platform": ratio_spread(disk, platform),
    }
