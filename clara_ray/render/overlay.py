"""Label maps blended over grey images as coloured segments.

The label image must already be oriented and resampled like the grey image
it overlays: :func:`clara_ray.render.slices.label_slice` for a slice,
:func:`clara_ray.render.projection.label_projection` for a MIP or MinIP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from clara_ray.volume import array_module

__all__ = ["DEFAULT_PALETTE", "blend_labels", "segment_colour"]

Colour = tuple[int, int, int]

DEFAULT_PALETTE: tuple[Colour, ...] = (
    (230, 160, 120),
    (80, 160, 255),
    (255, 240, 170),
    (220, 60, 60),
    (90, 200, 90),
    (200, 100, 220),
    (255, 160, 40),
    (60, 210, 210),
)
"""Colours of label values 1, 2, 3, ... (repeating): body, lungs and bone for ct-lung-bone."""


def segment_colour(label: int, colours: Mapping[int, Colour] | None = None) -> Colour:
    """The RGB colour of ``label``: from ``colours`` if it names it, else the default palette."""
    if colours is not None and label in colours:
        return colours[label]
    return DEFAULT_PALETTE[(label - 1) % len(DEFAULT_PALETTE)]


def _check_colour(label: int, colour: Colour) -> None:
    if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
        raise ValueError(
            f"colour of label {label} must be three integers in 0..255, got {colour!r}"
        )


def blend_labels(
    grey: Any,
    labels: Any,
    *,
    opacity: float = 0.5,
    segments: Iterable[int] | None = None,
    colours: Mapping[int, Colour] | None = None,
) -> Any:
    """RGB uint8: ``grey`` (uint8, 2-D) with each selected segment blended in its colour.

    ``segments`` is the set of label values to show (``None``: every non-zero
    label present); ``opacity`` in 0..1 is the colour's weight,
    ``grey * (1 - opacity) + colour * opacity``, rounded half up.
    """
    xp = array_module(grey)
    if not (isinstance(opacity, int | float) and math.isfinite(opacity) and 0 <= opacity <= 1):
        raise ValueError(f"opacity must be a number in 0..1, got {opacity!r}")
    if grey.ndim != 2 or labels.shape != grey.shape:
        raise ValueError(
            f"labels shape {labels.shape} must equal the 2-D grey image's shape {grey.shape}"
        )
    chosen = xp.unique(labels).tolist() if segments is None else segments
    for label, colour in (colours or {}).items():
        _check_colour(label, colour)
    out = xp.repeat(grey[:, :, None], 3, axis=2).astype(xp.float32)
    for label in sorted({int(v) for v in chosen} - {0}):
        mask = labels == label
        colour = xp.asarray(segment_colour(label, colours), dtype=xp.float32)
        out[mask] = out[mask] * (1 - opacity) + colour * opacity
    return xp.floor(out + 0.5).astype(xp.uint8)
