"""Through Ray, with a real GPU: a task with ``num_gpus=1`` sees it, the operators run on it
through the platform's operator task, the render actor renders on it, and a Serve
replica of the inference app runs the liver model on CUDA.

The Ray side runs in a process of its own (:mod:`tests.gpu.ray_checks`) with a Ray
of one GPU; these tests read what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clara_ray.inference.torchscript import TorchScriptModel
from clara_ray.operators.ai_segmentation import DEFAULT_MODEL_PATH
from tests.gpu.cuda import need_cupy, need_torch_cuda, requires_cuda

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 480

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(TIMEOUT_S + 60),
    requires_cuda,
]


class Checks:
    def __init__(self, out: Path) -> None:
        self.results: dict[str, Any] = json.loads((out / "result.json").read_text())
        with np.load(out / "arrays.npz") as arrays:
            self.arrays = {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> Checks:
    out = tmp_path_factory.mktemp("ray-gpu")
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.gpu.ray_checks", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode != 0 or not (out / "result.json").is_file():
        pytest.fail(
            f"tests.gpu.ray_checks exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return Checks(out)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_a_task_with_one_gpu_sees_it_and_cuda(checks: Checks) -> None:
    task = checks.results["task"]
    assert len(task["gpu_ids"]) == 1, task
    assert task["cuda_visible_devices"] == task["gpu_ids"][0], task
    assert task["torch_cuda"] and task["torch_devices"] == 1, (
        f"torch in a num_gpus=1 task sees no CUDA (install a CUDA build of torch): {task}"
    )
    assert task["cupy_devices"] == 1, f"cupy in a num_gpus=1 task: {task['cupy_error']}"


def test_segment_ct_in_a_gpu_task_runs_on_cupy_and_equals_the_cpu_task(checks: Checks) -> None:
    need_cupy()
    gpu, cpu = checks.results["segment_ct_gpu"], checks.results["segment_ct_cpu"]
    assert len(gpu["gpu_ids"]) == 1 and cpu["gpu_ids"] == []
    assert "device=gpu" in gpu["log"], gpu["log"]
    assert "device=cpu" in cpu["log"], cpu["log"]
    np.testing.assert_array_equal(checks.arrays["segment_ct_gpu"], checks.arrays["segment_ct_cpu"])


def test_segment_liver_in_a_gpu_task_runs_on_cuda_like_the_cpu_task(checks: Checks) -> None:
    need_torch_cuda()
    gpu, cpu = checks.results["segment_liver_gpu"], checks.results["segment_liver_cpu"]
    assert len(gpu["gpu_ids"]) == 1 and cpu["gpu_ids"] == []
    assert "device=cuda" in gpu["log"], gpu["log"]
    assert "device=cpu" in cpu["log"], cpu["log"]
    gpu_mask = checks.arrays["segment_liver_gpu"] == 1
    cpu_mask = checks.arrays["segment_liver_cpu"] == 1
    assert cpu_mask.sum() > 1000
    assert dice(gpu_mask, cpu_mask) >= 0.99


def test_the_render_actor_with_a_gpu_renders_on_it(checks: Checks) -> None:
    need_cupy()
    ping = checks.results["render_ping"]
    assert ping["gpu"] is True and len(ping["gpu_ids"]) == 1, ping


def test_a_serve_replica_with_a_gpu_runs_the_liver_model_on_cuda(checks: Checks) -> None:
    need_torch_cuda()
    stats = checks.results["serve_stats"]
    assert len(stats["gpu_ids"]) == 1, stats
    assert str(stats["device"]).startswith("cuda"), stats
    x = checks.arrays["serve_input"]
    expected = TorchScriptModel.load(ROOT / DEFAULT_MODEL_PATH, "cpu")(x)
    out = checks.arrays["serve_output"]
    assert out.shape == expected.shape
    diff = np.abs(out - expected)
    assert float(diff.max()) <= 0.05 and float(diff.mean()) <= 2e-3, (
        float(diff.max()),
        float(diff.mean()),
    )
