"""Tests of clara_ray.operators.segmentation on synthetic CT volumes (no Ray)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from clara_ray.context import OperatorContext
from clara_ray.operators.segmentation import (
    BODY,
    BONE,
    LUNGS,
    SEGMENTS,
    body_mask,
    keep_components,
    largest_component,
    segment_ct,
    segment_list,
)
from clara_ray.sample.phantom import generate_phantom
from clara_ray.volume import Volume
from tests.contexts import operator_context

SHAPE = (32, 96, 96)
SPACING = (2.5, 1.5, 1.5)  # 5.625 mm3 per voxel
AIR, TISSUE, LUNG, BONE_HU = -1000, 40, -850, 700


@dataclass(frozen=True)
class Synthetic:
    hu: np.ndarray
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray


def make_context(tmp_path: Path) -> OperatorContext:
    return operator_context(tmp_path, "segment")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def synthetic_ct(seed: int = 0) -> Synthetic:
    """A body ellipse (all slices), two lung ellipsoids, a spine cylinder and a table.

    Edges are blurred and noise added.  Distractors: a 4x4x4 air bubble
    (360 mm3) and a 2x2x2 dense speck (45 mm3) inside the body, and a table
    slab apart from it.
    """
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = np.broadcast_to(((y - 48) / 36) ** 2 + ((x - 48) / 44) ** 2 < 1, SHAPE)
    lungs = np.zeros(SHAPE, dtype=bool)
    for cx in (28, 68):
        lungs |= ((z - 16) / 10) ** 2 + ((y - 44) / 14) ** 2 + ((x - cx) / 12) ** 2 < 1
    bone = np.broadcast_to((y - 72) ** 2 + (x - 48) ** 2 < 5**2, SHAPE)
    hu = np.full(SHAPE, AIR, dtype=np.float64)
    hu[body] = TISSUE
    hu[lungs] = LUNG
    hu[bone] = BONE_HU
    hu[:, 90:93, :] = 0  # the table
    hu[4:8, 60:64, 20:24] = AIR  # a gas bubble
    hu[20:22, 20:22, 40:42] = 900  # a contrast speck
    hu = scipy.ndimage.gaussian_filter(hu, sigma=0.7)  # the scanner's blur
    hu += np.random.default_rng(seed).normal(0, 20, SHAPE)
    return Synthetic(hu.astype(np.int16), body.copy(), lungs, bone.copy())


def volume_of(hu: np.ndarray) -> Volume:
    return Volume(hu, spacing=SPACING, origin=(-70.0, -80.0, 120.0))


@pytest.fixture(scope="module")
def phantom() -> Synthetic:
    return synthetic_ct()


def test_segments_each_structure_with_high_dice(tmp_path: Path, phantom: Synthetic) -> None:
    labels = segment_ct(make_context(tmp_path), volume_of(phantom.hu))["labels"].array
    assert dice(labels > 0, phantom.body) > 0.95
    assert dice(labels == LUNGS, phantom.lungs) > 0.95
    assert dice(labels == BONE, phantom.bone) > 0.95
    assert not labels[:, 90:93, :].any(), "the table is not part of the body"


def test_segments_the_sample_phantom(tmp_path: Path) -> None:
    phantom = generate_phantom(slices=40, rows=256, columns=256, spacing=(2.5, 1.4, 1.4))
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    labels = segment_ct(make_context(tmp_path), volume)["labels"].array
    assert dice(labels > 0, phantom.labels["body"]) > 0.9
    assert dice(labels == LUNGS, phantom.labels["lungs"]) > 0.9
    assert dice(labels == BONE, phantom.labels["bone"]) > 0.9


def test_label_volume_keeps_grid_and_names_segments(tmp_path: Path, phantom: Synthetic) -> None:
    volume = volume_of(phantom.hu)
    labels = segment_ct(make_context(tmp_path), volume)["labels"]
    assert labels.array.dtype == np.uint8
    assert labels.shape == volume.shape
    assert (labels.spacing, labels.origin, labels.direction) == (
        volume.spacing,
        volume.origin,
        volume.direction,
    )
    assert labels.metadata["segments"] == [
        {"label": 1, "name": "body"},
        {"label": 2, "name": "lungs"},
        {"label": 3, "name": "bone"},
    ]
    assert segment_list(labels) == list(SEGMENTS)


def test_small_components_dropped_unless_limits_lowered(tmp_path: Path, phantom: Synthetic) -> None:
    ctx = make_context(tmp_path)
    default = segment_ct(ctx, volume_of(phantom.hu))["labels"].array
    assert (default[4:8, 60:64, 20:24] == BODY).all(), "a 360 mm3 gas bubble is not lung"
    assert (default[20:22, 20:22, 40:42] == BODY).all(), "a 45 mm3 speck is not bone"

    result = segment_ct(ctx, volume_of(phantom.hu), min_component_mm3=100.0, min_bone_mm3=10.0)
    lowered = result["labels"].array
    assert (lowered[4:8, 60:64, 20:24] == LUNGS).any()
    assert (lowered[20:22, 20:22, 40:42] == BONE).all()


def test_thresholds_are_args(tmp_path: Path, phantom: Synthetic) -> None:
    ctx = make_context(tmp_path)
    labels = segment_ct(ctx, volume_of(phantom.hu), lung_hu=-950, bone_hu=1000)["labels"].array
    assert not (labels == LUNGS).any()
    assert not (labels == BONE).any()
    assert dice(labels > 0, phantom.body) > 0.95

    spine_only = segment_ct(ctx, volume_of(phantom.hu), body_hu=500)["labels"].array > 0
    assert spine_only.any()
    assert not spine_only[~phantom.bone].any(), "only the spine is above 500 HU"


def test_air_only_volume_gives_empty_label_map(tmp_path: Path) -> None:
    hu = np.full((8, 32, 32), AIR, dtype=np.int16)
    labels = segment_ct(make_context(tmp_path), volume_of(hu))["labels"].array
    assert labels.shape == hu.shape
    assert not labels.any()


def test_negative_size_limit_is_rejected(tmp_path: Path, phantom: Synthetic) -> None:
    with pytest.raises(ValueError, match="min_component_mm3 must be a volume in mm3 >= 0"):
        segment_ct(make_context(tmp_path), volume_of(phantom.hu), min_component_mm3=-1.0)


def test_logs_one_info_line_with_counts(
    tmp_path: Path, phantom: Synthetic, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        labels = segment_ct(make_context(tmp_path), volume_of(phantom.hu))["labels"].array
    [record] = [r for r in caplog.records if r.getMessage().startswith("segment_ct")]
    assert "job=job-1" in record.getMessage()
    assert f"lungs={int((labels == LUNGS).sum())}" in record.getMessage()


def test_body_mask_fills_holes_slice_by_slice() -> None:
    _, y, x = np.ogrid[:6, :20, :20]
    radius2 = (y - 10) ** 2 + (x - 10) ** 2
    tube = np.broadcast_to((radius2 < 8**2) & (radius2 >= 5**2), (6, 20, 20))
    hu = np.where(tube, 40, -1000)
    body = body_mask(hu, -500, np, scipy.ndimage)
    # The lumen is open at both ends in 3-D but enclosed in every slice.
    assert np.array_equal(body, np.broadcast_to(radius2 < 8**2, (6, 20, 20)))


def test_largest_component_and_keep_components() -> None:
    mask = np.zeros((4, 10, 10), dtype=bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[2:4, 5:9, 5:9] = True  # 32 voxels
    assert largest_component(mask, np, scipy.ndimage).sum() == 32
    assert keep_components(mask, 9, np, scipy.ndimage).sum() == 32
    assert keep_components(mask, 8, np, scipy.ndimage).sum() == 40
    empty = np.zeros_like(mask)
    assert not largest_component(empty, np, scipy.ndimage).any()
    assert not keep_components(empty, 1, np, scipy.ndimage).any()


def test_segment_list_falls_back_to_label_values() -> None:
    array = np.zeros((2, 4, 4), dtype=np.uint8)
    array[0, 0, 0] = 5
    array[1, 1, 1] = 2
    assert segment_list(Volume(array)) == [
        {"label": 2, "name": "segment 2"},
        {"label": 5, "name": "segment 5"},
    ]
