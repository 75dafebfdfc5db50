"""Slices in radiological display convention, square pixels, PNG round trip."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from clara_ray.render.orientation import display_geometry
from clara_ray.render.png import encode_png
from clara_ray.render.slices import axis_length, label_slice, slice_image, slice_values
from clara_ray.render.windowing import SOFT_TISSUE, Window
from clara_ray.volume import Volume

W = SOFT_TISSUE


def windowed(array: np.ndarray, window: Window) -> np.ndarray:
    lower = window.level - window.width / 2
    scaled = np.floor((array.astype(np.float64) - lower) / window.width * 255 + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture
def identity_volume() -> Volume:
    """Identity direction, isotropic: slice index runs to superior, rows to posterior,
    columns to the patient's left (a head-first-supine axial series)."""
    rng = np.random.default_rng(1)
    return Volume(rng.integers(-300, 300, size=(12, 20, 30), dtype=np.int16))


def test_axial_slice_png_is_the_windowed_array_slice(identity_volume: Volume) -> None:
    # Axial, seen from the feet: anterior (row 0) up, patient's left (high columns)
    # on the image's right: the array slice as it is.
    image = decode(encode_png(slice_image(identity_volume, "axial", 5, W)))
    np.testing.assert_array_equal(image, windowed(identity_volume.array[5], W))


def test_coronal_and_sagittal_slices_put_superior_up(identity_volume: Volume) -> None:
    a = identity_volume.array
    # Coronal, seen from the front: superior (high slice index) up, patient's left right.
    coronal = decode(encode_png(slice_image(identity_volume, "coronal", 7, W)))
    np.testing.assert_array_equal(coronal, windowed(a[::-1, 7, :], W))
    # Sagittal, seen from the patient's left: superior up, anterior (row 0) on the left.
    sagittal = decode(encode_png(slice_image(identity_volume, "sagittal", 11, W)))
    np.testing.assert_array_equal(sagittal, windowed(a[::-1, :, 11], W))


def test_axis_length(identity_volume: Volume) -> None:
    lengths = [axis_length(identity_volume, axis) for axis in ("axial", "coronal", "sagittal")]
    assert lengths == [12, 20, 30]


Direction = tuple[tuple[float, float, float], ...]


def _signed_permutations() -> list[Direction]:
    """All 48 axis-aligned direction matrices: permutations with sign flips."""
    matrices: list[Direction] = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for column, (row, sign) in enumerate(zip(perm, signs, strict=True)):
                m[row, column] = sign
            matrices.append(tuple((float(r[0]), float(r[1]), float(r[2])) for r in m))
    return matrices


# Per view: (LPS coordinate that must grow down the rows, sign), (along the columns, sign).
EXPECTED = {
    "axial": ((1, 1), (0, 1)),
    "coronal": ((2, -1), (0, 1)),
    "sagittal": ((2, -1), (1, 1)),
}


@pytest.mark.parametrize("direction", _signed_permutations())
@pytest.mark.parametrize("axis", sorted(EXPECTED))
def test_every_axis_aligned_orientation_is_displayed_in_patient_space(
    direction: Direction, axis: str
) -> None:
    shape = (5, 6, 7)
    base = Volume(np.zeros(shape), spacing=(1.0, 1.0, 1.0), direction=direction)
    index = np.indices(shape).reshape(3, -1)
    lps = (base.affine() @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    (row_axis, row_sign), (column_axis, column_sign) = EXPECTED[axis]
    middle = axis_length(base, axis) // 2
    for lps_axis in range(3):
        coordinate = base.with_array(lps[lps_axis].reshape(shape))
        image = slice_values(coordinate, axis, middle)
        down, across = np.diff(image, axis=0), np.diff(image, axis=1)
        expected_down = row_sign * (lps_axis == row_axis)
        expected_across = column_sign * (lps_axis == column_axis)
        assert np.allclose(down, expected_down), (lps_axis, "rows")
        assert np.allclose(across, expected_across), (lps_axis, "columns")


def test_coronal_view_of_an_anisotropic_volume_has_the_physical_aspect() -> None:
    # 3 mm slices, 0.7 mm pixels: a ball of radius 20 mm must come out round.
    shape, spacing = (40, 100, 100), (3.0, 0.7, 0.7)
    z, y, x = (np.indices(shape).astype(float) + 0.5) * np.reshape(spacing, (3, 1, 1, 1))
    centre = np.array(shape) * spacing / 2
    ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 20.0**2
    volume = Volume(np.where(ball, 200, -1000).astype(np.int16), spacing=spacing)
    image = slice_image(volume, "coronal", 50, W)
    assert image.shape == (round(40 * 3.0 / 0.7), 100)  # 120 mm by 70 mm at 0.7 mm pixels
    bright = np.argwhere(image > 128)
    height = bright[:, 0].max() - bright[:, 0].min() + 1
    width = bright[:, 1].max() - bright[:, 1].min() + 1
    assert abs(height - width) <= 2
    assert abs(width - 40 / 0.7) <= 3
    labels = label_slice(volume.with_array(ball.astype(np.uint8)), "coronal", 50)
    assert labels.shape == image.shape and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 1}


def test_geometry_of_a_sagittal_acquisition() -> None:
    # Slices along +L, rows running -S, columns +P: the sagittal view is the array slice.
    direction = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.0))
    rng = np.random.default_rng(2)
    volume = Volume(rng.integers(-100, 100, (8, 9, 10), dtype=np.int16), direction=direction)
    geometry = display_geometry(volume, "sagittal")
    assert (geometry.normal, geometry.rows, geometry.columns) == (0, 1, 2)
    np.testing.assert_array_equal(
        slice_image(volume, "sagittal", 3, W), windowed(volume.array[3], W)
    )
    # Axial: rows (+P) are the array's columns, image columns (+L) the array's slices.
    np.testing.assert_array_equal(
        slice_image(volume, "axial", 4, W), windowed(volume.array[:, 4, :].T, W)
    )


@pytest.mark.parametrize(
    ("axis", "index", "message"),
    [
        ("axial", 12, r"index must be in 0..11 for axis 'axial', got 12"),
        ("coronal", -1, r"index must be in 0..19 for axis 'coronal', got -1"),
        ("sagittal", 30, r"index must be in 0..29 for axis 'sagittal', got 30"),
        ("oblique", 0, r"axis must be one of \['axial', 'coronal', 'sagittal'\], got 'oblique'"),
    ],
)
def test_bad_index_or_axis(identity_volume: Volume, axis: str, index: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slice_image(identity_volume, axis, index, W)


def test_index_must_be_an_integer(identity_volume: Volume) -> None:
    with pytest.raises(TypeError, match=r"index must be an integer, got 2.5"):
        slice_image(identity_volume, "axial", 2.5, W)  # type: ignore[arg-type]


def test_oblique_volume_shows_in_its_nearest_axis_aligned_orientation(
    identity_volume: Volume,
) -> None:
    # Tilted 10 degrees about the patient's L axis: no reslicing, the nearest orientation.
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    tilted = Volume(identity_volume.array, direction=((1, 0, 0), (0, c, -s), (0, s, c)))
    np.testing.assert_array_equal(
        slice_image(tilted, "coronal", 4, W), slice_image(identity_volume, "coronal", 4, W)
    )
