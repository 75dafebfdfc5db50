"""What a client asks the render server for: one view of one volume, and saved view settings.

The HTTP query parameters of ``GET /api/v1/render/{job}/{volume}/{view}.png``
map one to one onto :class:`ViewRequest`; an invalid one is a ``ValueError``
naming the parameter and what it accepts (the API answers 400 with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clara_ray.render.raycast import MAX_SIZE, TRANSFER_PRESETS
from clara_ray.render.windowing import PRESETS

__all__ = [
    "VIEWS",
    "ViewRequest",
    "ViewSettings",
    "parse_view_request",
    "parse_view_settings",
]

VIEWS = ("slice", "mip", "minip", "3d")
"""The views a volume offers."""

View = Literal["slice", "mip", "minip", "3d"]
Axis = Literal["axial", "coronal", "sagittal"]


class ViewRequest(BaseModel):
    """One view. ``index`` is the slice (slice view) or the slab's centre (projections;
    default: the middle); ``preset`` is a window preset for 2-D views and a transfer
    function preset for 3D; ``overlay`` names a label-map volume of the same job,
    ``segments`` the label values shown (default: all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view: View
    axis: Axis = "axial"
    index: int | None = Field(None, ge=0)
    window: float | None = Field(None, gt=0)
    level: float | None = None
    preset: str | None = None
    slab: float | None = Field(None, ge=0, description="Slab thickness in mm; 0 or none: all.")
    azimuth: float = Field(30.0, ge=-360, le=360)
    elevation: float = Field(20.0, ge=-90, le=90)
    overlay: str | None = None
    segments: tuple[int, ...] | None = None
    opacity: float = Field(0.5, ge=0, le=1)
    size: int = Field(512, ge=16, le=MAX_SIZE)

    def cache_key(self) -> tuple[Any, ...]:
        return tuple(sorted(self.model_dump().items()))


class ViewSettings(BaseModel):
    """A volume's saved view (as Clara's render server saved camera and transfer function):
    what the viewer opens the volume with."""

    model_config = ConfigDict(extra="forbid")

    mode: View = "slice"
    axis: Axis = "axial"
    index: int | None = Field(None, ge=0)
    preset: str | None = None
    window: float | None = Field(None, gt=0)
    level: float | None = None
    transfer: str = "ct_bone"
    azimuth: float = Field(30.0, ge=-360, le=360)
    elevation: float = Field(20.0, ge=-90, le=90)
    slab: float = Field(0.0, ge=0)
    overlay: str | None = None
    segments: list[int] = Field(default_factory=list)
    opacity: float = Field(0.4, ge=0, le=1)


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _check_preset(request: ViewRequest) -> None:
    if request.preset is None:
        return
    allowed = TRANSFER_PRESETS if request.view == "3d" else PRESETS
    if request.preset not in allowed:
        raise ValueError(
            f"preset: {request.preset!r} is not a {request.view} preset; "
            f"expected one of {', '.join(sorted(allowed))}"
        )


def parse_view_request(view: str, params: Mapping[str, str]) -> ViewRequest:
    """A :class:`ViewRequest` from a view name and query parameters (strings)."""
    data: dict[str, Any] = dict(params)
    if "segments" in data:
        try:
            data["segments"] = tuple(int(s) for s in str(data["segments"]).split(",") if s.strip())
        except ValueError:
            raise ValueError(
                f"segments: expected label values separated by commas, got {params['segments']!r}"
            ) from None
    if view not in VIEWS:
        raise ValueError(f"view: {view!r} is not a view; expected one of {', '.join(VIEWS)}")
    try:
        request = ViewRequest(view=view, **data)
    except ValidationError as exc:
        raise ValueError(_problems(exc)) from None
    if (request.window is None) != (request.level is None):
        raise ValueError("window and level: give both (or a preset)")
    _check_preset(request)
    return request


def parse_view_settings(data: Mapping[str, Any]) -> ViewSettings:
    try:
        return ViewSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise ValueError(_problems(exc)) from None
