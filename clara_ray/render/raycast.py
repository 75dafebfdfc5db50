"""3-D volume rendering by orthographic ray casting with a transfer function.

Rays run parallel to the camera's view direction, one per pixel of a square
image whose field of view is the volume's diagonal, so the volume fits at
every angle and keeps its scale as the camera orbits.  Each ray is clipped to
the volume's box, sampled every ``step`` mm with trilinear interpolation
(``map_coordinates`` on the index grid, so any direction matrix is handled
exactly), classified by a piecewise-linear transfer function and composited
front to back; a ray stops once it is opaque (transmittance below 1/255).
No shading: colours are emission only.

Speed on a CPU comes from working on a smaller grid: :func:`prepare_volume`
block-averages the volume to at most ``max_samples`` voxels along each axis
(a service caches the result), rays are cast at most ``max_rays`` across and
the image is interpolated (bilinear) up to the output size.  Finer rays than
the prepared grid's voxels would add time but little detail.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clara_ray.operators.segmentation import ndimage_module
from clara_ray.render.orientation import resize_axis
from clara_ray.volume import Volume, array_module

__all__ = [
    "CT_BONE",
    "CT_SOFT_TISSUE",
    "MAX_SIZE",
    "TRANSFER_PRESETS",
    "Camera",
    "ControlPoint",
    "TransferFunction",
    "prepare_volume",
    "render_volume",
]

MAX_SIZE = 1024
"""Largest output image side in pixels."""

_LUT_BINS = 4096
_OPAQUE = 1.0 / 255.0
_CHUNK = 16  # samples per ray taken in one vectorised step


@dataclass(frozen=True)
class ControlPoint:
    """Colour (0..1 per channel) and opacity per millimetre of path (0..1) at ``value``."""

    value: float
    red: float
    green: float
    blue: float
    opacity: float


@dataclass(frozen=True)
class TransferFunction:
    """A piecewise-linear map from value to RGBA, constant beyond its first and last points."""

    points: tuple[ControlPoint, ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError(
                f"transfer function needs at least 2 control points, got {len(self.points)}"
            )
        values = [p.value for p in self.points]
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError(f"transfer function control point values must increase, got {values}")
        for p in self.points:
            channels = (p.red, p.green, p.blue, p.opacity)
            if any(not 0 <= c <= 1 for c in channels):
                raise ValueError(
                    f"control point at {p.value}: colour and opacity must be in 0..1, got {channels}"
                )

    def table(self, step_mm: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        """``(first value, bins per unit, rgb (bins, 3), alpha (bins,))`` for a sample step.

        Opacity is corrected for the step, ``1 - (1 - opacity) ** step_mm``, so
        an image does not darken or fade as the sampling changes.
        """
        first, last = self.points[0].value, self.points[-1].value
        values = np.linspace(first, last, _LUT_BINS)
        xs = [p.value for p in self.points]

        def channel(name: str) -> np.ndarray:
            return np.interp(values, xs, [getattr(p, name) for p in self.points])

        rgb = np.stack([channel("red"), channel("green"), channel("blue")], axis=1)
        alpha = 1.0 - (1.0 - channel("opacity")) ** step_mm
        scale = (_LUT_BINS - 1) / (last - first)
        return first, scale, rgb.astype(np.float32), alpha.astype(np.float32)


CT_BONE = TransferFunction(
    (
        ControlPoint(-1000, 0.0, 0.0, 0.0, 0.0),
        ControlPoint(150, 0.55, 0.25, 0.15, 0.0),
        ControlPoint(250, 0.9, 0.75, 0.6, 0.15),
        ControlPoint(600, 1.0, 0.95, 0.85, 0.6),
        ControlPoint(1500, 1.0, 1.0, 1.0, 0.9),
    )
)
"""Bone: transparent below about 150 HU, ivory and nearly opaque above 600 HU."""

CT_SOFT_TISSUE = TransferFunction(
    (
        ControlPoint(-1000, 0.0, 0.0, 0.0, 0.0),
        ControlPoint(-500, 0.6, 0.35, 0.25, 0.0),
        ControlPoint(-100, 0.85, 0.6, 0.45, 0.05),
        ControlPoint(60, 0.8, 0.3, 0.25, 0.12),
        ControlPoint(300, 1.0, 0.9, 0.8, 0.4),
        ControlPoint(1500, 1.0, 1.0, 1.0, 0.9),
    )
)
"""Soft tissue: a faint skin and fat, reddish muscle and organs, opaque white bone."""

TRANSFER_PRESETS: dict[str, TransferFunction] = {
    "ct_bone": CT_BONE,
    "ct_soft_tissue": CT_SOFT_TISSUE,
}


@dataclass(frozen=True)
class Camera:
    """An orbit around the volume's centre, in degrees.

    At azimuth 0 and elevation 0 the camera looks from the patient's front
    (like a coronal view: superior up, the patient's left on the image's
    right); positive azimuth moves it towards the patient's left (90: seen
    from the left, like a sagittal view), positive elevation towards the head.
    """

    azimuth: float = 0.0
    elevation: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.azimuth) and -360 <= self.azimuth <= 360):
            raise ValueError(f"camera azimuth must be in -360..360 degrees, got {self.azimuth!r}")
        if not (math.isfinite(self.elevation) and -90 <= self.elevation <= 90):
            raise ValueError(f"camera elevation must be in -90..90 degrees, got {self.elevation!r}")

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit LPS vectors ``(view, right, up)``: along the rays, image right, image up."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        towards_camera = np.array(
            [math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)]
        )
        up = np.array([-math.sin(el) * math.sin(az), math.sin(el) * math.cos(az), math.cos(el)])
        view = -towards_camera
        return view, np.cross(view, up), up


def prepare_volume(volume: Volume, max_samples: int = 256) -> Volume:
    """``volume`` as float32, block-averaged to at most ``max_samples`` voxels per axis.

    Each axis is reduced by the smallest integer factor that fits (a trailing
    remainder is dropped); the geometry follows, each new voxel sitting at the
    centre of the block it averages.
    """
    if max_samples < 2:
        raise ValueError(f"max_samples must be at least 2, got {max_samples}")
    xp = array_module(volume.array)
    shape = volume.shape
    factors = tuple(max(1, math.ceil(n / max_samples)) for n in shape)
    if factors == (1, 1, 1):
        return volume.with_array(volume.array.astype(xp.float32, copy=False))
    out = tuple(n // f for n, f in zip(shape, factors, strict=True))
    total = xp.zeros(out, dtype=xp.float32)
    for offset in itertools.product(*(range(f) for f in factors)):
        index = tuple(slice(o, o + n * f, f) for o, n, f in zip(offset, out, factors, strict=True))
        total += volume.array[index]
    total *= 1.0 / math.prod(factors)
    centre = volume.affine() @ np.array([(f - 1) / 2 for f in factors] + [1.0])
    s0, s1, s2 = (float(s) * f for s, f in zip(volume.spacing, factors, strict=True))
    return Volume(
        total,
        spacing=(s0, s1, s2),
        origin=(float(centre[0]), float(centre[1]), float(centre[2])),
        direction=volume.direction,
        source=volume.source,
        metadata=volume.metadata,
    )


def _check_size(size: int) -> None:
    if (
        isinstance(size, bool)
        or not isinstance(size, int | np.integer)
        or not 1 <= size <= MAX_SIZE
    ):
        raise ValueError(f"render size must be an integer in 1..{MAX_SIZE}, got {size!r}")


@dataclass(frozen=True)
class _Rays:
    """The rays that hit the volume, in the volume's index coordinates."""

    pixels: np.ndarray  # (n,) flat image index of each ray
    start: np.ndarray  # (3, n) index coordinates of each ray's first sample
    delta: np.ndarray  # (3,) index step per sample
    samples: np.ndarray  # (n,) samples inside the volume


def _rays(volume: Volume, camera: Camera, across: int, step_mm: float) -> _Rays:
    """One ray per pixel of an ``across`` x ``across`` image, clipped to the volume's box."""
    affine = volume.affine()
    shape = np.asarray(volume.shape, dtype=float)
    to_index = np.linalg.inv(affine[:3, :3])
    centre = affine @ np.append((shape - 1) / 2, 1.0)
    extent = float(np.linalg.norm(shape * np.asarray(volume.spacing, dtype=float)))
    view, right, up = camera.basis()
    offsets = (np.arange(across) + 0.5 - across / 2) * (extent / across)
    x, y = np.meshgrid(offsets, offsets)
    points = centre[:3] + x.reshape(-1, 1) * right - y.reshape(-1, 1) * up - (extent / 2) * view
    origin = (points - affine[:3, 3]) @ to_index.T  # (across**2, 3) index coordinates
    direction = to_index @ view  # index units per mm along the ray
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (0.0 - origin) / direction
        t1 = (shape - 1 - origin) / direction
    near = np.where(
        direction != 0,
        np.minimum(t0, t1),
        np.where((origin >= 0) & (origin <= shape - 1), -np.inf, np.inf),
    )
    far = np.where(
        direction != 0,
        np.maximum(t0, t1),
        np.where((origin >= 0) & (origin <= shape - 1), np.inf, -np.inf),
    )
    t_near, t_far = near.max(axis=1), far.min(axis=1)
    hit = np.flatnonzero(t_far >= t_near)
    t_near, t_far = t_near[hit], t_far[hit]
    start = origin[hit] + t_near[:, None] * direction
    samples = np.floor((t_far - t_near) / step_mm).astype(np.int64) + 1
    return _Rays(hit, start.T.copy(), direction * step_mm, samples)


def _composite(volume: Volume, rays: _Rays, transfer: TransferFunction, step_mm: float) -> Any:
    """Front-to-back compositing of every ray, ``_CHUNK`` samples at a time: (n, 3) RGB."""
    xp = array_module(volume.array)
    ndi = ndimage_module(xp)
    first, scale, rgb_table, alpha_table = transfer.table(step_mm)
    rgb_lut, alpha_lut = xp.asarray(rgb_table), xp.asarray(alpha_table)
    start, delta = xp.asarray(rays.start, dtype=xp.float32), xp.asarray(rays.delta, xp.float32)
    samples = xp.asarray(rays.samples)
    active = xp.arange(start.shape[1])
    colour = xp.zeros((start.shape[1], 3), dtype=xp.float32)
    transmittance = xp.ones(start.shape[1], dtype=xp.float32)
    steps = xp.arange(_CHUNK, dtype=xp.float32)
    for k in range(0, int(rays.samples.max(initial=0)), _CHUNK):
        n = active.shape[0]
        coords = start[:, :, None] + delta[:, None, None] * (steps + k)
        values = ndi.map_coordinates(
            volume.array, coords.reshape(3, -1), order=1, mode="nearest", output=xp.float32
        )
        bins = xp.clip((values - first) * scale, 0, _LUT_BINS - 1).astype(xp.int32)
        alpha = alpha_lut[bins].reshape(n, _CHUNK)
        alpha *= (steps + k)[None, :] < samples[:, None]
        through = xp.cumprod(1 - alpha, axis=1)
        before = xp.concatenate([xp.ones((n, 1), xp.float32), through[:, :-1]], axis=1)
        weight = (transmittance[:, None] * before * alpha)[:, :, None]
        colour[active] += (weight * rgb_lut[bins].reshape(n, _CHUNK, 3)).sum(axis=1)
        transmittance *= through[:, -1]
        keep = (transmittance > _OPAQUE) & (samples > k + _CHUNK)
        if not bool(keep.all()):
            active, start, samples = active[keep], start[:, keep], samples[keep]
            transmittance = transmittance[keep]
            if active.shape[0] == 0:
                break
    return colour


def render_volume(
    volume: Volume,
    camera: Camera | None = None,
    transfer: TransferFunction = CT_BONE,
    size: int = 512,
    *,
    max_samples: int = 256,
    max_rays: int = 256,
) -> Any:
    """An RGB uint8 ``(size, size, 3)`` rendering of ``volume`` seen by ``camera``.

    ``volume`` goes through :func:`prepare_volume` (a no-op beyond the float32
    conversion if it is already prepared); rays are cast ``min(size,
    max_rays)`` across on a black background and the image is interpolated
    up to ``size``.
    """
    _check_size(size)
    if max_rays < 1:
        raise ValueError(f"max_rays must be at least 1, got {max_rays}")
    camera = camera or Camera()
    prepared = prepare_volume(volume, max_samples)
    xp = array_module(prepared.array)
    step_mm = min(float(s) for s in prepared.spacing)
    across = min(size, max_rays)
    rays = _rays(prepared, camera, across, step_mm)
    colour = _composite(prepared, rays, transfer, step_mm)
    image = xp.zeros((across * across, 3), dtype=xp.float32)
    image[xp.asarray(rays.pixels)] = colour
    image = image.reshape(across, across, 3)
    image = resize_axis(resize_axis(image, 0, size), 1, size)
    return xp.clip(xp.floor(image * 255 + 0.5), 0, 255).astype(xp.uint8)
