"""The liver model on CUDA agrees with the CPU: the TorchScript runner and the operator.

cuDNN may run the float32 convolutions in TF32 on recent GPUs (torch's default), so
probabilities differ by up to a few hundredths where the CPU's are exact to 1e-6; the
masks differ only at a handful of boundary voxels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from clara_ray.inference.torchscript import TorchScriptModel, select_device
from clara_ray.operators.ai_segmentation import (
    DEFAULT_MODEL_PATH,
    liver_probability,
    segment_liver,
)
from clara_ray.sample.phantom import Phantom, generate_phantom
from clara_ray.volume import Volume
from tests.contexts import operator_context
from tests.gpu.cuda import need_torch_cuda, requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / DEFAULT_MODEL_PATH
PROBABILITY_MAX_DIFF = 0.05
PROBABILITY_MEAN_DIFF = 2e-3
MASK_DICE = 0.99


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=24, rows=256, columns=256, spacing=(3.0, 1.4, 1.4), seed=3)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_auto_picks_cuda_and_the_model_loads_there() -> None:
    need_torch_cuda()
    assert select_device("auto").type == "cuda"
    model = TorchScriptModel.load(MODEL, "cuda")
    assert model.device.type == "cuda"
    assert next(model.module.parameters()).is_cuda


def test_probabilities_on_cuda_match_the_cpu(phantom: Phantom) -> None:
    need_torch_cuda()
    cpu = liver_probability(phantom.hu, TorchScriptModel.load(MODEL, "cpu")).numpy()
    gpu = liver_probability(phantom.hu, TorchScriptModel.load(MODEL, "cuda")).numpy()
    diff = np.abs(gpu - cpu)
    assert float(diff.max()) <= PROBABILITY_MAX_DIFF, float(diff.max())
    assert float(diff.mean()) <= PROBABILITY_MEAN_DIFF, float(diff.mean())


def test_the_operator_given_a_gpu_runs_on_cuda_like_the_cpu(
    tmp_path: Path, phantom: Phantom, caplog: pytest.LogCaptureFixture
) -> None:
    need_torch_cuda()
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    with caplog.at_level(logging.INFO, logger="clara_ray.operator"):
        cpu = segment_liver(operator_context(tmp_path, "liver"), volume, model_path=str(MODEL))
        gpu = segment_liver(
            operator_context(tmp_path, "liver", gpu_ids=(0,)), volume, model_path=str(MODEL)
        )
    assert "running on CPU" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("segment_liver")]
    assert [("device=cpu" in m, "device=cuda" in m) for m in lines] == [
        (True, False),
        (False, True),
    ]
    cpu_mask, gpu_mask = cpu["labels"].array == 1, gpu["labels"].array == 1
    assert isinstance(gpu["labels"].array, np.ndarray)
    assert cpu_mask.sum() > 1000, "the phantom's liver is found"
    assert dice(gpu_mask, cpu_mask) >= MASK_DICE
    assert dice(gpu_mask, phantom.labels["liver"]) >= dice(cpu_mask, phantom.labels["liver"]) - 0.01
