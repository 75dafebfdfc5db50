"""Threshold-based CT segmentation: body, lungs and bone as one label map.

The array logic is a set of pure functions over an array module ``xp``
(numpy or cupy) and its matching ``ndimage`` module ``ndi`` (``scipy.ndimage``
or ``cupyx.scipy.ndimage``), so the same code runs on a CPU or a GPU and is
tested without a context.  :func:`segment_ct` is the operator.

On a GPU: a cupy input volume is segmented on its device, and a numpy input is
moved to the GPU when the operator's task was given one (``ctx.gpu_ids``) and
cupy runs there (the ``gpu`` extra); its labels come back to the host as
numpy, so any downstream task reads them with or without a GPU.  A task given
a GPU on which cupy cannot run logs a warning saying why and runs on the CPU.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import scipy.ndimage

from clara_ray.context import OperatorContext
from clara_ray.volume import CudaUnavailableError, Volume, array_module, cuda_array_module

__all__ = [
    "BODY",
    "BONE",
    "LUNGS",
    "SEGMENTS",
    "body_mask",
    "bone_mask",
    "compose_labels",
    "keep_components",
    "largest_component",
    "lung_mask",
    "ndimage_module",
    "segment_ct",
    "segment_list",
]

BODY = 1
LUNGS = 2
BONE = 3
SEGMENTS: tuple[dict[str, Any], ...] = (
    {"label": BODY, "name": "body"},
    {"label": LUNGS, "name": "lungs"},
    {"label": BONE, "name": "bone"},
)
"""The label map's legend, stored as ``metadata["segments"]`` (JSON-friendly)."""

# Face-connected neighbourhoods: in 3-D, and within one slice only.
_CROSS_3D = scipy.ndimage.generate_binary_structure(3, 1)
_CROSS_IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
_CROSS_IN_SLICE[1] = scipy.ndimage.generate_binary_structure(2, 1)


def ndimage_module(xp: ModuleType) -> ModuleType:
    """The ``ndimage`` module matching the array module ``xp``."""
    if xp is np:
        return scipy.ndimage
    import cupyx.scipy.ndimage

    return cupyx.scipy.ndimage


def keep_components(mask: Any, min_voxels: int, xp: ModuleType, ndi: ModuleType) -> Any:
    """``mask`` with only its face-connected components of at least ``min_voxels`` voxels."""
    components, _ = ndi.label(mask, structure=xp.asarray(_CROSS_3D))
    sizes = xp.bincount(components.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[components]


def largest_component(mask: Any, xp: ModuleType, ndi: ModuleType) -> Any:
    """``mask`` with only its largest face-connected component (all False when empty)."""
    components, count = ndi.label(mask, structure=xp.asarray(_CROSS_3D))
    if count == 0:
        return mask.copy()
    sizes = xp.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def body_mask(hu: Any, threshold: float, xp: ModuleType, ndi: ModuleType) -> Any:
    """The body: largest component of ``hu > threshold``, holes filled slice by slice.

    Filling each axial slice on its own closes the lungs and the airways, which
    are enclosed in-plane but reach the outside air through the mouth in 3-D.
    """
    body = largest_component(hu > threshold, xp, ndi)
    return ndi.binary_fill_holes(body, structure=xp.asarray(_CROSS_IN_SLICE))


def lung_mask(
    hu: Any, body: Any, threshold: float, min_voxels: int, xp: ModuleType, ndi: ModuleType
) -> Any:
    """Air inside the body (``hu < threshold``), opened, in components of ``min_voxels`` or more.

    The opening cuts thin bridges and noise; the size limit drops bowel gas and
    other small pockets.
    """
    air = ndi.binary_opening((hu < threshold) & body, structure=xp.asarray(_CROSS_3D))
    return keep_components(air, min_voxels, xp, ndi)


def bone_mask(
    hu: Any, body: Any, threshold: float, min_voxels: int, xp: ModuleType, ndi: ModuleType
) -> Any:
    """Dense voxels inside the body (``hu > threshold``) in components of ``min_voxels`` or more."""
    return keep_components((hu > threshold) & body, min_voxels, xp, ndi)


def compose_labels(body: Any, lungs: Any, bone: Any, xp: ModuleType) -> Any:
    """A uint8 label map: :data:`BODY`, then :data:`LUNGS` and :data:`BONE` over it."""
    labels = xp.zeros(body.shape, dtype=xp.uint8)
    labels[body] = BODY
    labels[lungs] = LUNGS
    labels[bone] = BONE
    return labels


def _min_voxels(name: str, mm3: float, voxel_mm3: float) -> int:
    if not mm3 >= 0:
        raise ValueError(f"segment_ct arg {name} must be a volume in mm3 >= 0, got {mm3!r}")
    return math.ceil(float(mm3) / voxel_mm3)


def segment_list(labels: Volume) -> list[dict[str, Any]]:
    """A label map's legend: ``metadata["segments"]``, else one entry per label value found."""
    segments = labels.metadata.get("segments")
    if segments is not None:
        return [{"label": int(s["label"]), "name": str(s["name"])} for s in segments]
    xp = array_module(labels.array)
    values = [int(v) for v in xp.unique(labels.array).tolist() if v != 0]
    return [{"label": v, "name": f"segment {v}"} for v in values]


def _gpu_module(ctx: OperatorContext) -> ModuleType | None:
    """cupy when the run was given a GPU and cupy runs on it; None (with a warning) otherwise."""
    if not ctx.use_gpu:
        return None
    try:
        return cuda_array_module()
    except CudaUnavailableError as exc:
        ctx.logger.warning(
            "segment_ct job=%s operator=%s: assigned GPU %s but %s; running on CPU",
            ctx.job_id,
            ctx.operator,
            list(ctx.gpu_ids),
            exc,
        )
        return None


def segment_ct(
    ctx: OperatorContext,
    volume: Volume,
    body_hu: float = -500,
    lung_hu: float = -400,
    bone_hu: float = 300,
    min_component_mm3: float = 1000.0,
    min_bone_mm3: float = 100.0,
) -> dict[str, Volume]:
    """Segment a CT volume (HU) into body, lungs and bone.

    Inputs: ``volume``, a CT :class:`Volume` in Hounsfield units (numpy or cupy).
    Outputs: ``labels``, a uint8 :class:`Volume` on the same grid with
    0 = outside, 1 = body, 2 = lungs, 3 = bone, and ``metadata["segments"]``
    set to :data:`SEGMENTS`.
    Args: ``body_hu`` (body is above it), ``lung_hu`` (lung air is below it),
    ``bone_hu`` (bone is above it), ``min_component_mm3`` (smallest lung
    component kept), ``min_bone_mm3`` (smallest bone component kept).
    Files: none.  Runs on the GPU (cupy) when the input is a cupy array, or
    when the run was given a GPU and cupy runs on it; a numpy input gives
    numpy labels either way.
    """
    voxel_mm3 = volume.voxel_volume_mm3
    min_lung = _min_voxels("min_component_mm3", min_component_mm3, voxel_mm3)
    min_bone = _min_voxels("min_bone_mm3", min_bone_mm3, voxel_mm3)
    hu = volume.array
    xp = array_module(hu)
    on_host = xp is np
    gpu = _gpu_module(ctx) if on_host else None
    if gpu is not None:
        xp, hu = gpu, gpu.asarray(hu)
    ndi = ndimage_module(xp)

    body = body_mask(hu, body_hu, xp, ndi)
    lungs = lung_mask(hu, body, lung_hu, min_lung, xp, ndi)
    bone = bone_mask(hu, body, bone_hu, min_bone, xp, ndi)
    labels = compose_labels(body, lungs, bone, xp)

    counts = xp.bincount(labels.ravel(), minlength=len(SEGMENTS) + 1)
    ctx.logger.info(
        "segment_ct job=%s operator=%s: device=%s voxels body=%d lungs=%d bone=%d of %d",
        ctx.job_id,
        ctx.operator,
        "cpu" if xp is np else "gpu",
        int(counts[BODY]),
        int(counts[LUNGS]),
        int(counts[BONE]),
        int(labels.size),
    )
    if on_host and xp is not np:
        labels = labels.get()
    return {"labels": volume.with_array(labels, segments=[dict(s) for s in SEGMENTS])}
