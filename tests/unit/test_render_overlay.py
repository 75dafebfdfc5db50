"""Label maps blended over grey images."""

from __future__ import annotations

import numpy as np
import pytest

from clara_ray.render.overlay import DEFAULT_PALETTE, blend_labels, segment_colour
from clara_ray.render.projection import label_projection, projection_image
from clara_ray.render.slices import label_slice, slice_image
from clara_ray.render.windowing import Window
from clara_ray.volume import Volume

RED = (200, 0, 50)


@pytest.fixture
def grey() -> np.ndarray:
    return np.full((4, 5), 100, dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    out = np.zeros((4, 5), dtype=np.uint8)
    out[1, 1] = 1
    out[2, 3] = 2
    return out


def test_opaque_segment_takes_its_colour(grey: np.ndarray, labels: np.ndarray) -> None:
    rgb = blend_labels(grey, labels, opacity=1.0, colours={1: RED})
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == RED
    assert tuple(rgb[2, 3]) == DEFAULT_PALETTE[1]  # label 2 from the default palette
    assert tuple(rgb[0, 0]) == (100, 100, 100)  # background stays grey


def test_half_opacity_blends(grey: np.ndarray, labels: np.ndarray) -> None:
    rgb = blend_labels(grey, labels, opacity=0.5, colours={1: RED})
    assert tuple(rgb[1, 1]) == (150, 50, 75)  # (100 + 200) / 2, (100 + 0) / 2, (100 + 50) / 2


def test_only_selected_segments_are_drawn(grey: np.ndarray, labels: np.ndarray) -> None:
    rgb = blend_labels(grey, labels, opacity=1.0, segments={2})
    assert tuple(rgb[1, 1]) == (100, 100, 100)
    assert tuple(rgb[2, 3]) == DEFAULT_PALETTE[1]
    assert (blend_labels(grey, labels, opacity=1.0, segments=set()) == 100).all()


def test_default_palette_repeats() -> None:
    assert segment_colour(1) == DEFAULT_PALETTE[0]
    assert segment_colour(len(DEFAULT_PALETTE) + 1) == DEFAULT_PALETTE[0]
    assert segment_colour(1, {1: RED}) == RED


def test_overlay_matches_slice_and_projection_geometry() -> None:
    # Anisotropic: the label image must be resampled like the grey image it overlays.  The
    # grey image is resampled linearly, the labels by nearest neighbour: with a window whose
    # grey 128 falls halfway between the two values, a pixel is bright exactly where the
    # nearest voxel is the block's.
    shape = (10, 12, 14)
    array = np.full(shape, -1000, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    array[2:6, 3:7, 4:9] = 300
    labels[2:6, 3:7, 4:9] = 3
    volume = Volume(array, spacing=(2.5, 0.8, 0.8))
    label_volume = volume.with_array(labels)
    halfway = Window(width=1.0, level=-350.0)
    grey = slice_image(volume, "coronal", 5, halfway)
    lab = label_slice(label_volume, "coronal", 5)
    assert lab.shape == grey.shape == (31, 14)
    np.testing.assert_array_equal(lab == 3, grey >= 128)
    mip = projection_image(volume, "sagittal", halfway)
    mip_labels = label_projection(volume, label_volume, "sagittal")
    assert mip_labels.shape == mip.shape == (31, 12)
    np.testing.assert_array_equal(mip_labels == 3, mip >= 128)
    rgb = blend_labels(mip, mip_labels, opacity=1.0, colours={3: RED})
    assert (rgb[mip_labels == 3] == RED).all()


@pytest.mark.parametrize("opacity", [-0.1, 1.5, float("nan")])
def test_opacity_out_of_range(grey: np.ndarray, labels: np.ndarray, opacity: float) -> None:
    with pytest.raises(ValueError, match=r"opacity must be a number in 0..1, got"):
        blend_labels(grey, labels, opacity=opacity)


def test_bad_shapes_and_colours(grey: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(
        ValueError, match=r"labels shape \(4, 4\) must equal the 2-D grey image's shape \(4, 5\)"
    ):
        blend_labels(grey, labels[:, :4])
    with pytest.raises(ValueError, match=r"colour of label 1 must be three integers in 0..255"):
        blend_labels(grey, labels, colours={1: (300, 0, 0)})
