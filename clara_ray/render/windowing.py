"""Window/level: CT values to 8-bit grey, and the usual CT presets.

The mapping is DICOM's ``LINEAR_EXACT`` VOI function (PS3.3 C.11.2.1.3.2):
values at or below ``level - width / 2`` are black, values above
``level + width / 2`` are white, and values in between map linearly onto
0..255 (rounded half up).  Unlike DICOM's plain ``LINEAR`` function it needs
no ``width - 1`` in a denominator, so any width above zero is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from clara_ray.volume import array_module

__all__ = [
    "BONE",
    "BRAIN",
    "LUNG",
    "PRESETS",
    "SOFT_TISSUE",
    "Window",
    "apply_window",
    "parse_window",
]


@dataclass(frozen=True)
class Window:
    """A display window in the input's units (HU for CT): ``width`` > 0, ``level`` its centre."""

    width: float
    level: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"window width must be a finite number > 0, got {self.width!r}")
        if not math.isfinite(self.level):
            raise ValueError(f"window level must be a finite number, got {self.level!r}")

    @property
    def lower(self) -> float:
        """The value at and below which the output is black."""
        return self.level - self.width / 2


LUNG = Window(width=1500, level=-600)
BONE = Window(width=2000, level=300)
SOFT_TISSUE = Window(width=400, level=40)
BRAIN = Window(width=80, level=40)
PRESETS: dict[str, Window] = {
    "lung": LUNG,
    "bone": BONE,
    "soft_tissue": SOFT_TISSUE,
    "brain": BRAIN,
}
"""Standard radiology CT windows by name."""


def apply_window(array: Any, window: Window) -> Any:
    """``array`` (numpy or cupy, any shape) windowed to uint8 grey of the same shape.

    Computed in float64 so that the rounding is the same for every input dtype.
    """
    xp = array_module(array)
    scaled = (array.astype(xp.float64) - window.lower) / window.width * 255.0
    return xp.clip(xp.floor(scaled + 0.5), 0, 255).astype(xp.uint8)


def _number(name: str, value: float | str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"window {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"window {name} must be a finite number, got {value!r}")
    return number


def parse_window(
    preset: str | None = None,
    width: float | str | None = None,
    level: float | str | None = None,
) -> Window:
    """A :class:`Window` from a preset name or from ``width`` and ``level`` (numbers or strings).

    Meant for request parameters: every error is a ``ValueError`` naming the
    parameter and what it accepts.
    """
    if preset is not None:
        if width is not None or level is not None:
            raise ValueError("window preset excludes width and level: give one or the other")
        if preset not in PRESETS:
            raise ValueError(f"window preset must be one of {sorted(PRESETS)}, got {preset!r}")
        return PRESETS[preset]
    if width is None or level is None:
        raise ValueError(
            f"window needs a preset (one of {sorted(PRESETS)}) or both width and level"
        )
    w = _number("width", width)
    if w <= 0:
        raise ValueError(f"window width must be > 0, got {width!r}")
    return Window(width=w, level=_number("level", level))
