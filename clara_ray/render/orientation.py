"""From a volume's array axes to a 2-D view in radiological display convention.

Each view names the patient (LPS) direction that runs down the image's rows
and along its columns, and the direction across the view:

* axial, seen from the feet: rows run anterior to posterior (+P), columns
  right to left (+L), so the patient's left is on the image's right;
* coronal, seen from the front: rows run superior to inferior (-S), columns
  right to left (+L);
* sagittal, seen from the patient's left: rows run superior to inferior (-S),
  columns anterior to posterior (+P), so anterior is on the image's left.

The volume's direction cosines say which array axis points (mostly) along
which patient axis, and with which sign.  An oblique volume is shown in its
nearest axis-aligned orientation, without reslicing: the array axis closest to
each patient axis stands for it.

Views are resampled so that pixels are square in millimetres: the coarser
of the two in-plane axes is stretched to the finer one's pixel size by linear
interpolation along that axis alone (nearest for label maps), with plain index
arithmetic that runs unchanged on numpy and cupy.  The finer axis is left as
it is, so an isotropic volume's view is the array itself, untouched.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from clara_ray.volume import Volume, array_module

__all__ = [
    "AXES",
    "DisplayGeometry",
    "axis_length",
    "check_index",
    "display_geometry",
    "orient",
    "resize_axis",
    "square_pixels",
]

AXES = ("axial", "coronal", "sagittal")
"""The display axes, by name."""

# Per view: (LPS axis across the view, (LPS axis, sign) down the rows, (LPS axis, sign)
# along the columns); LPS axes are 0 = L, 1 = P, 2 = S.
_VIEWS: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (1, 1), (0, 1)),
    "coronal": (1, (2, -1), (0, 1)),
    "sagittal": (0, (2, -1), (1, 1)),
}


@dataclass(frozen=True)
class DisplayGeometry:
    """Where a view's axes are in the volume's array, and the pixel sizes of the view.

    ``normal``, ``rows`` and ``columns`` are array axes (0 slice, 1 row,
    2 column); the flips say whether the array axis runs against the display
    direction.  ``shape`` is the view's shape after :func:`square_pixels`.
    """

    axis: str
    normal: int
    rows: int
    columns: int
    flip_rows: bool
    flip_columns: bool
    row_spacing: float
    column_spacing: float
    normal_spacing: float
    shape: tuple[int, int]

    @property
    def pixel_mm(self) -> float:
        """Side of one square output pixel in millimetres."""
        return min(self.row_spacing, self.column_spacing)


def _patient_axes(direction: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For array axes (slice, row, column): the LPS axis each stands for, and its sign.

    The assignment is the permutation that best matches the direction cosines,
    so that every patient axis gets exactly one array axis even for an oblique volume.
    """
    d = np.asarray(direction, dtype=float)
    vectors = (d[:, 2], d[:, 1], d[:, 0])  # direction columns are (column, row, slice)
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(vectors[a][p[a]]) for a in range(3)),
    )
    signs = tuple(1 if vectors[a][best[a]] >= 0 else -1 for a in range(3))
    return tuple(best), signs


def display_geometry(volume: Volume, axis: str) -> DisplayGeometry:
    """The :class:`DisplayGeometry` of ``volume`` viewed along ``axis`` (one of :data:`AXES`)."""
    if axis not in _VIEWS:
        raise ValueError(f"axis must be one of {list(AXES)}, got {axis!r}")
    normal_lps, (row_lps, row_sign), (col_lps, col_sign) = _VIEWS[axis]
    lps, signs = _patient_axes(volume.direction)
    array_axis = {lps[a]: a for a in range(3)}
    normal, rows, columns = array_axis[normal_lps], array_axis[row_lps], array_axis[col_lps]
    spacing = tuple(float(s) for s in volume.spacing)
    pixel = min(spacing[rows], spacing[columns])
    shape = volume.shape
    out = (
        max(1, round(shape[rows] * spacing[rows] / pixel)),
        max(1, round(shape[columns] * spacing[columns] / pixel)),
    )
    return DisplayGeometry(
        axis=axis,
        normal=normal,
        rows=rows,
        columns=columns,
        flip_rows=signs[rows] != row_sign,
        flip_columns=signs[columns] != col_sign,
        row_spacing=spacing[rows],
        column_spacing=spacing[columns],
        normal_spacing=spacing[normal],
        shape=out,
    )


def axis_length(volume: Volume, axis: str) -> int:
    """How many positions (slices) ``volume`` has along the display ``axis``."""
    return volume.shape[display_geometry(volume, axis).normal]


def check_index(volume: Volume, geometry: DisplayGeometry, index: int, name: str = "index") -> int:
    """``index`` as an int, if it is a valid position along the view's normal axis.

    Positions count along the volume's own array axis (for a usual axial series
    the axial index is the array's slice index), whatever the display flips.
    """
    try:
        value = operator.index(index)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {index!r}") from None
    n = volume.shape[geometry.normal]
    if not 0 <= value < n:
        raise ValueError(f"{name} must be in 0..{n - 1} for axis {geometry.axis!r}, got {value}")
    return value


def orient(plane: Any, geometry: DisplayGeometry) -> Any:
    """A 2-D ``plane`` (the volume with its ``normal`` axis taken or reduced away) as displayed.

    Returns a view (transposed and flipped) at the array's own pixel sizes.
    """
    if geometry.rows > geometry.columns:
        plane = plane.T
    if geometry.flip_rows:
        plane = plane[::-1, :]
    if geometry.flip_columns:
        plane = plane[:, ::-1]
    return plane


def resize_axis(array: Any, axis: int, length: int, *, nearest: bool = False) -> Any:
    """``array`` resampled to ``length`` samples along ``axis``, pixel centres aligned.

    Linear interpolation returns float32; ``nearest`` keeps the dtype.
    """
    xp = array_module(array)
    n = array.shape[axis]
    if n == length:
        return array
    positions = (xp.arange(length, dtype=xp.float64) + 0.5) * (n / length) - 0.5
    positions = xp.clip(positions, 0, n - 1)
    if nearest:
        return xp.take(array, xp.floor(positions + 0.5).astype(xp.intp), axis=axis)
    low = xp.floor(positions).astype(xp.intp)
    high = xp.minimum(low + 1, n - 1)
    shape = [1] * array.ndim
    shape[axis] = length
    weight = (positions - low).astype(xp.float32).reshape(shape)
    a = xp.take(array, low, axis=axis).astype(xp.float32)
    b = xp.take(array, high, axis=axis).astype(xp.float32)
    return a + (b - a) * weight


def square_pixels(image: Any, geometry: DisplayGeometry, *, nearest: bool = False) -> Any:
    """An oriented 2-D ``image`` resampled to ``geometry.shape``: square pixels in mm."""
    rows, columns = geometry.shape
    image = resize_axis(image, 0, rows, nearest=nearest)
    return resize_axis(image, 1, columns, nearest=nearest)
