"""A synthetic CT phantom: a torso with lungs, liver and bone, and its ground truth.

The anatomy is laid out in coordinates normalized to the image grid, so any
grid (a 20x64x64 test volume or a 300x512x512 study) holds the whole torso.
Axes follow a head-first-supine axial series written with the identity
orientation: slice index grows from inferior (upper abdomen, slice 0) to
superior (upper chest), row index from anterior to posterior, and column
index from patient right to patient left (the radiological display: patient
right is on the image's left).

The seed varies sizes and positions a little, and the noise, so that many
phantoms can serve as training data; the same seed gives the same phantom.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["LABELS", "Phantom", "generate_phantom"]

LABELS = ("body", "lungs", "bone", "liver")
"""Names of the ground-truth masks in :attr:`Phantom.labels`."""

# Tissue codes used while building a slice, with their mean HU and noise sigma.
_AIR, _FAT, _SOFT, _LUNG, _LIVER, _CORTICAL, _CANCELLOUS, _DISC, _CSF = range(9)
_MEAN_HU = (-1000, -100, 40, -850, 60, 1050, 800, 80, 15)
_SIGMA_HU = (0, 12, 10, 20, 6, 30, 25, 8, 6)

# Squared radii, as fractions of the body's half-axes, of the centred ellipses:
# the skin, the inner edge of subcutaneous fat, and the inside and outside of the ribs.
_FAT_INNER_R2 = 0.90**2
_RIB_INNER_R2 = 0.80**2
_RIB_OUTER_R2 = 0.86**2


def _hu_table() -> np.ndarray:
    """HU for each ``(tissue code << 8) | noise byte``: one gather turns both into HU.

    Noise byte ``k`` stands for the standard normal quantile at ``(k + 0.5) / 256``,
    so the noise is Gaussian-shaped and bounded (about +-2.9 sigma).
    """
    normal = NormalDist()
    quantiles = np.array([normal.inv_cdf((k + 0.5) / 256) for k in range(256)])
    hu = np.asarray(_MEAN_HU, float)[:, None] + np.asarray(_SIGMA_HU, float)[:, None] * quantiles
    return np.rint(hu).astype(np.int16).ravel()


@dataclass(frozen=True, eq=False)
class Phantom:
    """A CT volume in HU, indexed ``[slice, row, column]``, with boolean label masks.

    ``spacing`` is in millimetres in the same axis order.  ``labels`` maps each
    name of :data:`LABELS` to a mask of ``hu``'s shape; "lungs", "bone" and
    "liver" are disjoint and all lie inside "body".  Arrays are read-only.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    labels: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Anatomy:
    """Per-phantom proportions drawn from the seed (mostly fractions of the body's half-axes)."""

    body_u: float
    body_v: float
    lung_scale: float
    lung_base: float
    liver_du: float
    liver_dv: float
    liver_scale: float
    spine_du: float
    rib_periods: float
    rib_phase: float
    vertebra_periods: float
    vertebra_phase: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    u = rng.uniform
    return _Anatomy(
        body_u=u(0.78, 0.88),
        body_v=u(0.52, 0.60),
        lung_scale=u(0.92, 1.08),
        lung_base=u(0.40, 0.48),
        liver_du=u(-0.04, 0.04),
        liver_dv=u(-0.04, 0.04),
        liver_scale=u(0.9, 1.1),
        spine_du=u(-0.02, 0.02),
        rib_periods=u(9.0, 11.0),
        rib_phase=u(0.0, 1.0),
        vertebra_periods=u(10.0, 13.0),
        vertebra_phase=u(0.0, 1.0),
    )


def _ellipsoid_scale(t: float, centre: float, half_height: float) -> float:
    """Cross-section scale of an ellipsoid at height ``t`` (0 outside it)."""
    d = (t - centre) / half_height
    return float(np.sqrt(1.0 - d * d)) if abs(d) < 1.0 else 0.0


class _SliceBuilder:
    """Tissue codes of one axial slice at normalized height ``t`` in [0, 1].

    ``u`` (columns) and ``v`` (rows) run from -1 to 1 across the image; each
    structure is an axis-aligned ellipse painted only inside its bounding box.
    """

    def __init__(self, a: _Anatomy, rows: int, columns: int) -> None:
        self.a = a
        self.u = ((np.arange(columns) + 0.5) / columns * 2 - 1).astype(np.float32)
        self.v = ((np.arange(rows) + 0.5) / rows * 2 - 1).astype(np.float32)
        # Angle around the body centre: ribs skip the sternum and the spine, and
        # slope down anteriorly (a phase shift that grows towards the front).
        phi = np.arctan2(self.v[:, None] / a.body_v, self.u[None, :] / a.body_u)
        self.rib_sector = (np.abs(phi + np.pi / 2) > 0.35) & (np.abs(phi - np.pi / 2) > 0.30)
        self.rib_tilt = (-0.3 * np.sin(phi)).astype(np.float32)

    def codes(self, t: float) -> np.ndarray:
        a = self.a
        bx, by = a.body_u * (0.94 + 0.06 * float(np.sin(np.pi * t))), a.body_v
        # Squared normalized radius of the body ellipse: skin, fat and rib cage are its level sets.
        r2 = np.square(self.v / by)[:, None] + np.square(self.u / bx)[None, :]
        codes = np.zeros(r2.shape, dtype=np.uint8)
        codes[r2 <= 1.0] = _FAT
        codes[r2 <= _FAT_INNER_R2] = _SOFT
        self._liver(codes, r2, t, bx, by)
        self._lungs(codes, r2, t, bx, by)
        self._spine(codes, t, bx, by)
        if t >= a.lung_base - 0.05:
            phase = (t * a.rib_periods + a.rib_phase + self.rib_tilt) % 1.0
            ring = (r2 > _RIB_INNER_R2) & (r2 <= _RIB_OUTER_R2)
            codes[ring & self.rib_sector & (phase < 0.4)] = _CORTICAL
        if t >= 0.55:
            self._paint(codes, (0, -0.84 * by), (0.08 * bx, 0.05 * by), _CANCELLOUS)
        return codes

    def _paint(
        self,
        codes: np.ndarray,
        centre: tuple[float, float],
        axes: tuple[float, float],
        code: int,
        within: tuple[np.ndarray, float] | None = None,
    ) -> None:
        """Set ``code`` inside an ellipse, and where ``r2 <= limit`` for ``within=(r2, limit)``."""
        c0 = np.searchsorted(self.u, centre[0] - axes[0])
        c1 = np.searchsorted(self.u, centre[0] + axes[0], side="right")
        r0 = np.searchsorted(self.v, centre[1] - axes[1])
        r1 = np.searchsorted(self.v, centre[1] + axes[1], side="right")
        du = np.square((self.u[c0:c1] - centre[0]) / axes[0])
        dv = np.square((self.v[r0:r1] - centre[1]) / axes[1])
        mask = (dv[:, None] + du[None, :]) <= 1.0
        if within is not None:
            mask &= within[0][r0:r1, c0:c1] <= within[1]
        codes[r0:r1, c0:c1][mask] = code

    def _liver(self, codes: np.ndarray, r2: np.ndarray, t: float, bx: float, by: float) -> None:
        a = self.a
        s = a.liver_scale * _ellipsoid_scale(t, a.lung_base - 0.05, 0.25)
        if s > 0:
            centre = ((-0.40 + a.liver_du) * bx, (0.05 + a.liver_dv) * by)
            axes = (0.45 * bx * s, 0.62 * by * s)
            self._paint(codes, centre, axes, _LIVER, within=(r2, _FAT_INNER_R2))

    def _lungs(self, codes: np.ndarray, r2: np.ndarray, t: float, bx: float, by: float) -> None:
        a = self.a
        # The right lung (low column side) ends higher: the liver pushes its base up.
        for side, base in ((-1.0, a.lung_base + 0.04), (1.0, a.lung_base)):
            half = (1.15 - base) / 2
            s = a.lung_scale * _ellipsoid_scale(t, base + half, half)
            if s > 0:
                centre = (side * 0.42 * bx, -0.05 * by)
                axes = (0.30 * bx * s, 0.60 * by * s)
                self._paint(codes, centre, axes, _LUNG, within=(r2, _RIB_INNER_R2))

    def _spine(self, codes: np.ndarray, t: float, bx: float, by: float) -> None:
        a = self.a
        cu = a.spine_du
        body_centre, body_axes = (cu, 0.52 * by), (0.10 * bx, 0.17 * by)
        if (t * a.vertebra_periods + a.vertebra_phase) % 1.0 < 0.18:
            self._paint(codes, body_centre, body_axes, _DISC)
        else:
            self._paint(codes, body_centre, body_axes, _CORTICAL)
            self._paint(codes, body_centre, (0.075 * bx, 0.13 * by), _CANCELLOUS)
        self._paint(codes, (cu, 0.76 * by), (0.075 * bx, 0.10 * by), _CORTICAL)  # arch
        self._paint(codes, (cu, 0.76 * by), (0.045 * bx, 0.06 * by), _CSF)  # canal
        self._paint(codes, (cu, 0.90 * by), (0.025 * bx, 0.07 * by), _CORTICAL)  # spinous


def _check_args(slices: int, rows: int, columns: int, spacing: tuple[float, float, float]) -> None:
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    if rows < 8 or columns < 8:
        raise ValueError(f"rows and columns must be at least 8, got {rows}x{columns}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive millimetre values, got {spacing}")


def generate_phantom(
    slices: int = 120,
    rows: int = 512,
    columns: int = 512,
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    seed: int = 0,
) -> Phantom:
    """A torso phantom of ``slices`` axial slices of ``rows`` x ``columns`` pixels.

    HU: air -1000 outside the body, subcutaneous fat about -100, soft tissue
    about 40, lungs about -850, liver about 60 (on the patient's right, under
    the right lung), bone (vertebrae, ribs, sternum) 725 to 1140; every tissue
    but air carries mild noise.  ``spacing`` is ``(slice, row, column)`` in mm.
    """
    _check_args(slices, rows, columns, spacing)
    rng = np.random.default_rng(seed)
    builder = _SliceBuilder(_draw_anatomy(rng), rows, columns)
    table = _hu_table()
    hu = np.empty((slices, rows, columns), dtype=np.int16)
    codes = np.empty((slices, rows, columns), dtype=np.uint8)
    for z in range(slices):
        codes[z] = builder.codes(z / (slices - 1) if slices > 1 else 0.5)
        noise = np.frombuffer(rng.bytes(rows * columns), dtype=np.uint8).reshape(rows, columns)
        index = codes[z].astype(np.uint16) << 8
        index |= noise
        np.take(table, index, out=hu[z])
    labels = {
        "body": codes != _AIR,
        "lungs": codes == _LUNG,
        "bone": (codes == _CORTICAL) | (codes == _CANCELLOUS),
        "liver": codes == _LIVER,
    }
    for array in (hu, *labels.values()):
        array.flags.writeable = False
    mm = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return Phantom(hu=hu, spacing=mm, labels=labels)
