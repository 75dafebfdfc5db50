"""Per-segment measurements of a label map over an image: volume and HU statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from clara_ray.context import OperatorContext
from clara_ray.operators.segmentation import segment_list
from clara_ray.volume import Volume, array_module

__all__ = ["MEASUREMENTS_FILE", "measure", "measure_segments"]

MEASUREMENTS_FILE = "measurements.json"


def _check_grids(labels: Volume, volume: Volume) -> None:
    if labels.shape != volume.shape:
        raise ValueError(
            f"measure_segments input labels has shape {labels.shape}, "
            f"expected the shape of input volume {volume.shape}"
        )
    if not np.allclose(labels.spacing, volume.spacing):
        raise ValueError(
            f"measure_segments input labels has spacing {labels.spacing}, "
            f"expected the spacing of input volume {volume.spacing}"
        )
    if labels.array.dtype.kind not in ("b", "i", "u"):
        raise TypeError(
            f"measure_segments input labels must hold integers, got dtype {labels.array.dtype}"
        )


def _hu_stats(values: Any, xp: Any) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "median": None}
    return {
        "mean": float(values.mean(dtype=xp.float64)),
        "std": float(values.std(dtype=xp.float64)),
        "min": float(values.min()),
        "max": float(values.max()),
        "median": float(xp.median(values)),
    }


def measure(labels: Volume, volume: Volume) -> dict[str, Any]:
    """Measurements of every segment of ``labels`` over ``volume`` (JSON-friendly).

    ``std`` is the population standard deviation; HU statistics are None for
    an empty segment.
    """
    _check_grids(labels, volume)
    xp = array_module(volume.array)
    label_array = (
        labels.array if array_module(labels.array) is xp else xp.asarray(labels.to_numpy().array)
    )
    voxel_mm3 = volume.voxel_volume_mm3
    segments = []
    for segment in segment_list(labels):
        values = volume.array[label_array == segment["label"]]
        count = int(values.size)
        segments.append(
            {
                **segment,
                "voxel_count": count,
                "volume_ml": count * voxel_mm3 / 1000.0,
                "hu": _hu_stats(values, xp),
            }
        )
    source = volume.source
    return {
        "grid": {
            "shape": list(volume.shape),
            "spacing": [float(s) for s in volume.spacing],
            "voxel_volume_mm3": voxel_mm3,
        },
        "series_instance_uid": source.series_instance_uid if source else None,
        "segments": segments,
    }


def measure_segments(ctx: OperatorContext, labels: Volume, volume: Volume) -> dict[str, Any]:
    """Measure each segment of a label map over the image it was made from.

    Inputs: ``labels``, an integer label map :class:`Volume` (segments named by
    ``metadata["segments"]``, else by label value); ``volume``, the image on the
    same grid (CT in HU), numpy or cupy.
    Outputs: ``measurements``, a dict: ``grid`` (shape, spacing, voxel volume),
    ``series_instance_uid`` of ``volume``'s source (None when unknown) and
    ``segments``, each with label, name, voxel_count, volume_ml and
    ``hu`` mean/std/min/max/median.
    Args: none.
    Files: ``measurements.json``, the same dict.
    """
    result = measure(labels, volume)
    ctx.results.write_json(MEASUREMENTS_FILE, result)
    ctx.logger.info(
        "measure_segments job=%s operator=%s: %d segments measured",
        ctx.job_id,
        ctx.operator,
        len(result["segments"]),
    )
    return {"measurements": result}
