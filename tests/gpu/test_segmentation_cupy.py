"""segment_ct on cupy gives exactly the numpy labels, for a cupy input and for a run given a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from clara_ray.operators.segmentation import BONE, LUNGS, segment_ct
from clara_ray.sample.phantom import Phantom, generate_phantom
from clara_ray.volume import Volume, array_module
from tests.contexts import operator_context
from tests.gpu.cuda import need_cupy, requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=40, rows=256, columns=256, spacing=(2.5, 1.4, 1.4))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_a_cupy_volume_is_segmented_on_the_gpu_like_numpy(tmp_path: Path, phantom: Phantom) -> None:
    cupy = need_cupy()
    ctx = operator_context(tmp_path, "segment")
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    expected = segment_ct(ctx, volume)["labels"].array
    labels = segment_ct(ctx, volume.with_array(cupy.asarray(phantom.hu)))["labels"]
    assert array_module(labels.array) is cupy, "a cupy input gives cupy labels"
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array.get(), expected)
    assert labels.metadata["segments"][0] == {"label": 1, "name": "body"}
    assert dice(expected == LUNGS, phantom.labels["lungs"]) > 0.9
    assert dice(expected == BONE, phantom.labels["bone"]) > 0.9


def test_a_run_given_a_gpu_segments_a_numpy_volume_there_and_returns_numpy(
    tmp_path: Path, phantom: Phantom, caplog: pytest.LogCaptureFixture
) -> None:
    need_cupy()
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    expected = segment_ct(operator_context(tmp_path, "segment"), volume)["labels"].array
    ctx = operator_context(tmp_path, "segment", gpu_ids=(0,))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clara_ray.operator"):
        labels = segment_ct(ctx, volume)["labels"]
    assert isinstance(labels.array, np.ndarray), "the labels come back to the host"
    np.testing.assert_array_equal(labels.array, expected)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("segment_ct")]
    assert "device=gpu" in line
    assert "running on CPU" not in caplog.text
