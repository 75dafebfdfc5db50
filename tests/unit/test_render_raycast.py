"""3-D rendering of a bright sphere: centred, round, and moving with the camera as it should."""

from __future__ import annotations

import numpy as np
import pytest

from clara_ray.render.raycast import (
    CT_BONE,
    CT_SOFT_TISSUE,
    MAX_SIZE,
    Camera,
    ControlPoint,
    TransferFunction,
    prepare_volume,
    render_volume,
)
from clara_ray.volume import Volume

N = 48  # voxels per side, 1 mm isotropic
SIZE = 96
# The field of view is the volume's diagonal.
PIXEL_MM = N * np.sqrt(3) / SIZE


def sphere(
    centre_mm: tuple[float, float, float], radius_mm: float = 8.0, **geometry: object
) -> Volume:
    """A 1000 HU sphere in -1000 HU air; ``centre_mm`` is (slice, row, column) from the middle."""
    index = np.indices((N, N, N)).astype(float) - (N - 1) / 2
    offset = np.reshape(centre_mm, (3, 1, 1, 1))
    inside = ((index - offset) ** 2).sum(axis=0) <= radius_mm**2
    return Volume(np.where(inside, 1000, -1000).astype(np.int16), **geometry)  # type: ignore[arg-type]


def bright(image: np.ndarray) -> np.ndarray:
    return np.argwhere(image.max(axis=2) > 64)


def centroid(image: np.ndarray) -> np.ndarray:
    """(row, column) of the bright pixels, relative to the image centre."""
    return bright(image).mean(axis=0) - (SIZE - 1) / 2


def test_centred_sphere_is_centred_and_round() -> None:
    image = render_volume(sphere((0, 0, 0)), Camera(20, 30), CT_BONE, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.abs(centroid(image)).max() < 0.5
    points = bright(image)
    height, width = np.ptp(points, axis=0) + 1
    assert abs(height - width) <= 1
    assert abs(width - 16 / PIXEL_MM) <= 2  # 16 mm across
    assert image[0, 0].tolist() == [0, 0, 0]  # black background


@pytest.mark.parametrize(
    ("azimuth", "expected_column"),
    [(0, 1), (90, 0), (180, -1), (-90, 0)],
)
def test_off_centre_sphere_moves_with_azimuth(azimuth: float, expected_column: int) -> None:
    # 12 mm along the column axis, which the identity direction points to the patient's left.
    # Seen from the front (azimuth 0) the patient's left is on the image's right; from
    # behind (180) on the left; from either side (+-90) the sphere is on the view axis.
    image = render_volume(sphere((0, 0, 12)), Camera(azimuth, 0), CT_BONE, SIZE)
    row, column = centroid(image)
    assert abs(row) < 0.5
    assert column == pytest.approx(expected_column * 12 / PIXEL_MM, abs=0.7)


def test_azimuth_90_sees_from_the_left_with_posterior_on_the_right() -> None:
    # 12 mm posterior (the row axis) and 12 mm superior (the slice axis).
    image = render_volume(sphere((12, 12, 0)), Camera(90, 0), CT_BONE, SIZE)
    row, column = centroid(image)
    assert row == pytest.approx(-12 / PIXEL_MM, abs=0.7)  # superior is up
    assert column == pytest.approx(12 / PIXEL_MM, abs=0.7)


def test_elevation_90_looks_down_from_the_head() -> None:
    # From above the head, image up is posterior (the orbit's up vector tips over).
    image = render_volume(sphere((0, 12, 12)), Camera(0, 90), CT_BONE, SIZE)
    row, column = centroid(image)
    assert row == pytest.approx(-12 / PIXEL_MM, abs=0.7)
    assert column == pytest.approx(12 / PIXEL_MM, abs=0.7)


def test_direction_cosines_are_honoured() -> None:
    # Column axis pointing to the patient's right: the same array offset now shows on the left.
    flipped = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    image = render_volume(sphere((0, 0, 12), direction=flipped), Camera(0, 0), CT_BONE, SIZE)
    assert centroid(image)[1] == pytest.approx(-12 / PIXEL_MM, abs=0.7)


def test_anisotropic_spacing_keeps_the_sphere_round() -> None:
    # An ellipsoid in index space that is a 16 mm sphere at 2 mm slices, 1 mm pixels.
    index = np.indices((24, N, N)).astype(float)
    mm = (index - np.reshape([11.5, (N - 1) / 2, (N - 1) / 2], (3, 1, 1, 1))) * np.reshape(
        [2.0, 1.0, 1.0], (3, 1, 1, 1)
    )
    inside = (mm**2).sum(axis=0) <= 8.0**2
    volume = Volume(np.where(inside, 1000, -1000).astype(np.int16), spacing=(2.0, 1.0, 1.0))
    image = render_volume(volume, Camera(0, 0), CT_BONE, SIZE)
    height, width = np.ptp(bright(image), axis=0) + 1
    assert abs(height - width) <= 1


def test_soft_tissue_preset_renders_and_rays_upsample() -> None:
    image = render_volume(sphere((0, 0, 0)), Camera(), CT_SOFT_TISSUE, 200, max_rays=50)
    assert image.shape == (200, 200, 3)
    assert image[100, 100].max() > 64 and image[0, 0].tolist() == [0, 0, 0]


def test_prepare_volume_block_averages_and_keeps_geometry() -> None:
    array = np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8)
    volume = Volume(array, spacing=(2.0, 1.0, 0.5), origin=(10.0, 20.0, 30.0))
    prepared = prepare_volume(volume, max_samples=4)  # factors 1, 2, 2
    assert prepared.shape == (4, 3, 4) and prepared.array.dtype == np.float32
    expected = array.reshape(4, 3, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(prepared.array, expected)
    assert prepared.spacing == (2.0, 2.0, 1.0)
    # Voxel [0, 0, 0] sits at the centre of the block it averages: half a voxel in.
    np.testing.assert_allclose(prepared.origin, (10.0 + 0.25, 20.0 + 0.5, 30.0))
    assert prepare_volume(prepared, max_samples=4).array is prepared.array


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda v: render_volume(v, size=MAX_SIZE + 1),
            r"render size must be an integer in 1..1024, got 1025",
        ),
        (lambda v: render_volume(v, size=0), r"render size must be an integer in 1..1024, got 0"),
        (lambda v: Camera(azimuth=400), r"camera azimuth must be in -360..360 degrees, got 400"),
        (lambda v: Camera(elevation=-91), r"camera elevation must be in -90..90 degrees, got -91"),
        (lambda v: prepare_volume(v, max_samples=1), r"max_samples must be at least 2, got 1"),
        (
            lambda v: TransferFunction((ControlPoint(0, 0, 0, 0, 0),)),
            r"transfer function needs at least 2 control points, got 1",
        ),
        (
            lambda v: TransferFunction((ControlPoint(5, 0, 0, 0, 0), ControlPoint(5, 1, 1, 1, 1))),
            r"control point values must increase, got \[5, 5\]",
        ),
        (
            lambda v: TransferFunction((ControlPoint(0, 0, 0, 0, 0), ControlPoint(5, 2, 1, 1, 1))),
            r"control point at 5: colour and opacity must be in 0..1",
        ),
    ],
)
def test_bad_parameters(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(sphere((0, 0, 0)))  # type: ignore[operator]
