"""One slice of a volume as a windowed 8-bit image, in radiological display convention.

See :mod:`clara_ray.render.orientation` for the convention and the
resampling to square pixels.  The slice is resampled on the raw values
(float32) and windowed after, so interpolation never blends clamped values.
"""

from __future__ import annotations

from typing import Any

from clara_ray.render.orientation import (
    axis_length,
    check_index,
    display_geometry,
    orient,
    square_pixels,
)
from clara_ray.render.windowing import Window, apply_window
from clara_ray.volume import Volume, array_module

__all__ = ["axis_length", "label_slice", "slice_image", "slice_values"]


def _oriented_slice(volume: Volume, axis: str, index: int, *, nearest: bool) -> Any:
    geometry = display_geometry(volume, axis)
    index = check_index(volume, geometry, index)
    plane = array_module(volume.array).take(volume.array, index, axis=geometry.normal)
    return square_pixels(orient(plane, geometry), geometry, nearest=nearest)


def slice_values(volume: Volume, axis: str, index: int) -> Any:
    """The raw values of slice ``index`` along ``axis``, oriented for display, square pixels.

    float32 where the slice had to be resampled, else the volume's dtype.
    """
    return _oriented_slice(volume, axis, index, nearest=False)


def slice_image(volume: Volume, axis: str, index: int, window: Window) -> Any:
    """Slice ``index`` along ``axis`` ("axial", "coronal" or "sagittal") as uint8 grey.

    ``index`` counts along the volume's own array axis for that view (for a
    usual axial series, the array's slice index); see :func:`axis_length`.
    """
    return apply_window(slice_values(volume, axis, index), window)


def label_slice(labels: Volume, axis: str, index: int) -> Any:
    """A label map's slice, oriented and resampled (nearest) exactly like :func:`slice_image`."""
    return _oriented_slice(labels, axis, index, nearest=True)
