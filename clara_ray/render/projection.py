"""Maximum and minimum intensity projections (MIP, MinIP) along a display axis.

A projection reduces the volume along the view's normal axis, over the whole
volume or a slab, then is oriented and resampled exactly like a slice
(:mod:`clara_ray.render.orientation`).  Windowing is monotonic, so the raw
values are reduced first and only the 2-D result is windowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from clara_ray.render.orientation import (
    DisplayGeometry,
    check_index,
    display_geometry,
    orient,
    square_pixels,
)
from clara_ray.render.windowing import Window, apply_window
from clara_ray.volume import Volume, array_module

__all__ = [
    "ProjectionMode",
    "Slab",
    "label_projection",
    "projection_image",
    "projection_values",
    "slab_range",
]


class ProjectionMode(str, Enum):
    """Which voxel along each ray a projection shows."""

    MAX = "max"
    MIN = "min"


@dataclass(frozen=True)
class Slab:
    """A slab of ``thickness_mm`` centred on position ``centre`` along the view's normal axis."""

    centre: int
    thickness_mm: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.thickness_mm) and self.thickness_mm > 0):
            raise ValueError(
                f"slab thickness_mm must be a finite number > 0, got {self.thickness_mm!r}"
            )


def _mode(mode: ProjectionMode | str) -> ProjectionMode:
    try:
        return ProjectionMode(mode)
    except ValueError:
        allowed = [m.value for m in ProjectionMode]
        raise ValueError(f"projection mode must be one of {allowed}, got {mode!r}") from None


def _range(volume: Volume, geometry: DisplayGeometry, slab: Slab | None) -> tuple[int, int]:
    n = volume.shape[geometry.normal]
    if slab is None:
        return 0, n
    centre = check_index(volume, geometry, slab.centre, name="slab centre")
    # Positions whose centre lies within half the thickness of the slab's centre.
    half = math.floor(slab.thickness_mm / 2 / geometry.normal_spacing + 1e-9)
    return max(0, centre - half), min(n, centre + half + 1)


def slab_range(volume: Volume, axis: str, slab: Slab | None = None) -> tuple[int, int]:
    """``(start, stop)`` positions along ``axis`` a projection covers, clipped to the volume.

    A slab covers the positions within ``thickness_mm / 2`` of its centre
    (at least the centre itself); ``None`` covers the whole volume.
    """
    return _range(volume, display_geometry(volume, axis), slab)


def _slab(volume: Volume, geometry: DisplayGeometry, slab: Slab | None) -> Any:
    start, stop = _range(volume, geometry, slab)
    index: list[slice] = [slice(None)] * 3
    index[geometry.normal] = slice(start, stop)
    return volume.array[tuple(index)]


def projection_values(
    volume: Volume,
    axis: str,
    mode: ProjectionMode | str = ProjectionMode.MAX,
    slab: Slab | None = None,
) -> Any:
    """The raw projected values along ``axis``, oriented for display with square pixels."""
    mode = _mode(mode)
    geometry = display_geometry(volume, axis)
    data = _slab(volume, geometry, slab)
    xp = array_module(data)
    reduce = xp.max if mode is ProjectionMode.MAX else xp.min
    plane = reduce(data, axis=geometry.normal)
    return square_pixels(orient(plane, geometry), geometry)


def projection_image(
    volume: Volume,
    axis: str,
    window: Window,
    mode: ProjectionMode | str = ProjectionMode.MAX,
    slab: Slab | None = None,
) -> Any:
    """A MIP (``mode="max"``) or MinIP (``"min"``) along ``axis`` as uint8 grey."""
    return apply_window(projection_values(volume, axis, mode, slab), window)


def label_projection(
    volume: Volume,
    labels: Volume,
    axis: str,
    mode: ProjectionMode | str = ProjectionMode.MAX,
    slab: Slab | None = None,
) -> Any:
    """Labels to overlay on a projection: along each ray, the label of the voxel it shows.

    That is the label at the image's arg-max (MIP) or arg-min (MinIP), so a
    bright MIP pixel takes the colour of the structure that made it bright,
    rather than of whatever else the ray crossed.  Oriented and resampled
    (nearest) exactly like :func:`projection_image`.
    """
    mode = _mode(mode)
    if labels.shape != volume.shape:
        raise ValueError(
            f"labels shape {labels.shape} must equal the volume's shape {volume.shape}"
        )
    geometry = display_geometry(volume, axis)
    data = _slab(volume, geometry, slab)
    xp = array_module(data)
    pick = xp.argmax if mode is ProjectionMode.MAX else xp.argmin
    where = xp.expand_dims(pick(data, axis=geometry.normal), geometry.normal)
    plane = xp.take_along_axis(_slab(labels, geometry, slab), where, axis=geometry.normal)
    plane = xp.squeeze(plane, axis=geometry.normal)
    return square_pixels(orient(plane, geometry), geometry, nearest=True)
