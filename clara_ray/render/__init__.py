"""The render server's image code: what a viewer asks of a volume, as plain functions.

In the spirit of Clara's render server, a client (a web viewer) asks for:

* slices along the axial, coronal or sagittal axis, windowed by a CT preset or
  an explicit width/level (:mod:`~clara_ray.render.windowing`,
  :mod:`~clara_ray.render.slices`);
* maximum and minimum intensity projections, over the whole volume or a slab
  (:mod:`~clara_ray.render.projection`);
* 3-D renderings by ray casting, with a transfer function preset and a camera
  orbiting the volume (:mod:`~clara_ray.render.raycast`);
* any slice or projection with a segmentation's label map blended over it in
  per-segment colours (:mod:`~clara_ray.render.overlay`).

Slices and projections share one notion of display geometry
(:mod:`~clara_ray.render.orientation`): radiological convention in patient
(LPS) space, decided from the volume's direction cosines, with pixels
resampled to be square in millimetres.  Images come out as uint8 arrays and
go to the client as PNG (:mod:`~clara_ray.render.png`); a byte-bounded LRU
cache (:mod:`~clara_ray.render.cache`) keeps prepared volumes and encoded
images between requests.

Everything runs on numpy, and unchanged on cupy when the volume's array is a
cupy array: each function takes its array module from its input.  The Ray
actor and the HTTP routes wrap these functions and hold no image logic.
"""

from clara_ray.render.cache import ByteLRUCache
from clara_ray.render.orientation import AXES, DisplayGeometry, axis_length, display_geometry
from clara_ray.render.overlay import DEFAULT_PALETTE, blend_labels, segment_colour
from clara_ray.render.png import encode_png
from clara_ray.render.projection import (
    ProjectionMode,
    Slab,
    label_projection,
    projection_image,
    projection_values,
    slab_range,
)
from clara_ray.render.raycast import (
    CT_BONE,
    CT_SOFT_TISSUE,
    MAX_SIZE,
    TRANSFER_PRESETS,
    Camera,
    ControlPoint,
    TransferFunction,
    prepare_volume,
    render_volume,
)
from clara_ray.render.slices import label_slice, slice_image, slice_values
from clara_ray.render.windowing import PRESETS, Window, apply_window, parse_window

__all__ = [
    "AXES",
    "CT_BONE",
    "CT_SOFT_TISSUE",
    "DEFAULT_PALETTE",
    "MAX_SIZE",
    "PRESETS",
    "TRANSFER_PRESETS",
    "ByteLRUCache",
    "Camera",
    "ControlPoint",
    "DisplayGeometry",
    "ProjectionMode",
    "Slab",
    "TransferFunction",
    "Window",
    "apply_window",
    "axis_length",
    "blend_labels",
    "display_geometry",
    "encode_png",
    "label_projection",
    "label_slice",
    "parse_window",
    "prepare_volume",
    "projection_image",
    "projection_values",
    "render_volume",
    "segment_colour",
    "slab_range",
    "slice_image",
    "slice_values",
]
