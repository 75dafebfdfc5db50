"""MIP and MinIP: numpy's max and min along the display axis, windowed; slabs."""

from __future__ import annotations

import numpy as np
import pytest

from clara_ray.render.projection import (
    Slab,
    label_projection,
    projection_image,
    slab_range,
)
from clara_ray.render.windowing import BONE, Window
from clara_ray.volume import Volume

W = BONE


def windowed(array: np.ndarray, window: Window) -> np.ndarray:
    lower = window.level - window.width / 2
    scaled = np.floor((array.astype(np.float64) - lower) / window.width * 255 + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


@pytest.fixture
def volume() -> Volume:
    """Identity direction, isotropic 2 mm (see test_render_slices for the display convention)."""
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 1500, size=(16, 18, 20), dtype=np.int16)
    return Volume(array, spacing=(2.0, 2.0, 2.0))


def test_mip_and_minip_are_numpy_max_and_min_windowed(volume: Volume) -> None:
    a = volume.array
    np.testing.assert_array_equal(projection_image(volume, "axial", W), windowed(a.max(0), W))
    np.testing.assert_array_equal(
        projection_image(volume, "coronal", W, "max"), windowed(a.max(1)[::-1], W)
    )
    np.testing.assert_array_equal(
        projection_image(volume, "sagittal", W, "min"), windowed(a.min(2)[::-1], W)
    )
    np.testing.assert_array_equal(
        projection_image(volume, "axial", W, "min"), windowed(a.min(0), W)
    )


def test_slab_restricts_the_projection(volume: Volume) -> None:
    # 2 mm slices, 6 mm slab centred on slice 8: slices within 3 mm, 7..9.
    slab = Slab(centre=8, thickness_mm=6.0)
    assert slab_range(volume, "axial", slab) == (7, 10)
    a = volume.array
    np.testing.assert_array_equal(
        projection_image(volume, "axial", W, "max", slab), windowed(a[7:10].max(0), W)
    )
    np.testing.assert_array_equal(
        projection_image(volume, "coronal", W, "min", Slab(3, 4.0)),  # rows within 2 mm: 2..4
        windowed(a[:, 2:5].min(1)[::-1], W),
    )


def test_slab_is_clipped_to_the_volume(volume: Volume) -> None:
    assert slab_range(volume, "axial", Slab(0, 10.0)) == (0, 3)
    assert slab_range(volume, "sagittal", Slab(19, 100.0)) == (0, 20)
    assert slab_range(volume, "axial", Slab(5, 0.5)) == (5, 6)  # thinner than a slice
    assert slab_range(volume, "axial") == (0, 16)


def test_label_projection_takes_the_label_of_the_voxel_shown() -> None:
    array = np.full((4, 3, 3), -1000, dtype=np.int16)
    labels = np.zeros((4, 3, 3), dtype=np.uint8)
    array[1, 0, 0], labels[1, 0, 0] = 900, 3  # bone shows in the MIP
    labels[2, 0, 0] = 1  # a higher slice's label does not
    array[3, 2, 2], labels[3, 2, 2] = -2000, 2  # the darkest voxel shows in the MinIP
    volume = Volume(array)
    mip = label_projection(volume, volume.with_array(labels), "axial", "max")
    minip = label_projection(volume, volume.with_array(labels), "axial", "min")
    assert mip[0, 0] == 3
    assert minip[2, 2] == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: Slab(3, 0.0), r"slab thickness_mm must be a finite number > 0, got 0.0"),
        (lambda v: Slab(3, float("inf")), r"slab thickness_mm must be a finite number > 0"),
        (
            lambda v: projection_image(v, "axial", W, "max", Slab(16, 2.0)),
            r"slab centre must be in 0..15 for axis 'axial', got 16",
        ),
        (
            lambda v: projection_image(v, "axial", W, "mean"),
            r"projection mode must be one of \['max', 'min'\], got 'mean'",
        ),
        (
            lambda v: label_projection(v, v.with_array(np.zeros((2, 2, 2))), "axial"),
            r"labels shape \(2, 2, 2\) must equal the volume's shape \(16, 18, 20\)",
        ),
    ],
)
def test_bad_parameters(volume: Volume, call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(volume)  # type: ignore[operator]
