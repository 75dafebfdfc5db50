"""Render server: slices, projections and 3-D renderings of a 300x512x512 CT.

The volume is the synthetic torso phantom (int16 HU, 1 x 0.7 x 0.7 mm).  Each
figure is the median of several repeats with its range; ratios compare the
render code with a floor that does the least a server could do for the same
image:

* axial slice PNG: cold (orient, window, encode), cached (the encoded PNG
  from the byte-bounded LRU cache), floor (numpy windowing of the array slice
  plus the same PNG encoder);
* coronal slice PNG, resampled to square pixels (300 rows at 1 mm become 429
  at 0.7 mm): against the same floor without resampling;
* axial and coronal MIP: against numpy's max along the axis plus windowing;
* 3-D render at 512x512: absolute time against the 2 s goal, warm (the
  prepared, downsampled volume cached) and cold (preparing it too).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from clara_ray.render import (
    CT_BONE,
    CT_SOFT_TISSUE,
    ByteLRUCache,
    Camera,
    encode_png,
    prepare_volume,
    projection_image,
    render_volume,
    slice_image,
)
from clara_ray.render.windowing import BONE, SOFT_TISSUE, Window
from clara_ray.sample.phantom import generate_phantom
from clara_ray.volume import Volume

GOALS_MS = {"cached_slice": 30.0, "mip": 500.0, "render_3d": 2000.0}


def _floor_window(array: np.ndarray, window: Window) -> np.ndarray:
    lower = window.level - window.width / 2
    return np.clip((array - lower) * (255.0 / window.width), 0, 255).astype(np.uint8)


def _time(function: Callable[[int], object], repeats: int) -> dict[str, float]:
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        seconds.append(time.perf_counter() - start)
    return {
        "median_ms": round(statistics.median(seconds) * 1e3, 3),
        "min_ms": round(min(seconds) * 1e3, 3),
        "max_ms": round(max(seconds) * 1e3, 3),
    }


def _ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return round(a["median_ms"] / b["median_ms"], 2)


def run(repeats: int = 7) -> dict[str, Any]:
    phantom = generate_phantom(slices=300, rows=512, columns=512, spacing=(1.0, 0.7, 0.7))
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    array = phantom.hu
    cache = ByteLRUCache(256 * 1024**2)

    def cached_slice(i: int) -> bytes:
        key = ("axial", 150, SOFT_TISSUE)
        png = cache.get(key)
        if png is None:
            png = encode_png(slice_image(volume, "axial", 150, SOFT_TISSUE))
            cache.put(key, png, len(png))
        return png

    cached_slice(0)
    slice_cold = _time(
        lambda i: encode_png(slice_image(volume, "axial", 100 + i, SOFT_TISSUE)), repeats
    )
    slice_cached = _time(cached_slice, repeats)
    slice_floor = _time(lambda i: encode_png(_floor_window(array[100 + i], SOFT_TISSUE)), repeats)
    coronal = _time(
        lambda i: encode_png(slice_image(volume, "coronal", 200 + i, SOFT_TISSUE)), repeats
    )
    coronal_floor = _time(
        lambda i: encode_png(_floor_window(array[::-1, 200 + i], SOFT_TISSUE)), repeats
    )
    mip_repeats = max(3, repeats // 2)
    mip_axial = _time(lambda i: projection_image(volume, "axial", BONE), mip_repeats)
    mip_axial_floor = _time(lambda i: _floor_window(array.max(axis=0), BONE), mip_repeats)
    mip_coronal = _time(lambda i: projection_image(volume, "coronal", BONE), mip_repeats)
    mip_coronal_floor = _time(lambda i: _floor_window(array.max(axis=1), BONE), mip_repeats)

    render_repeats = max(3, repeats // 2)
    prepare = _time(lambda i: prepare_volume(volume), render_repeats)
    prepared = prepare_volume(volume)
    cameras = [Camera(azimuth=30.0 * i, elevation=15.0) for i in range(render_repeats)]
    bone = _time(lambda i: render_volume(prepared, cameras[i], CT_BONE, 512), render_repeats)
    soft = _time(lambda i: render_volume(prepared, cameras[i], CT_SOFT_TISSUE, 512), render_repeats)
    cold = _time(lambda i: render_volume(volume, cameras[i], CT_BONE, 512), render_repeats)
    return {
        "benchmark": "render server, 300x512x512 int16 CT phantom (1 x 0.7 x 0.7 mm)",
        "axial_slice_png_cold": slice_cold,
        "axial_slice_png_cached": slice_cached,
        "axial_slice_png_floor": slice_floor,
        "ratio_axial_cold_over_floor": _ratio(slice_cold, slice_floor),
        "coronal_slice_png_square_pixels": coronal,
        "coronal_slice_png_floor_unresampled": coronal_floor,
        "ratio_coronal_over_floor": _ratio(coronal, coronal_floor),
        "mip_axial": mip_axial,
        "mip_axial_floor": mip_axial_floor,
        "ratio_mip_axial_over_floor": _ratio(mip_axial, mip_axial_floor),
        "mip_coronal": mip_coronal,
        "mip_coronal_floor": mip_coronal_floor,
        "ratio_mip_coronal_over_floor": _ratio(mip_coronal, mip_coronal_floor),
        "render_3d_prepare_volume": prepare,
        "render_3d_512_bone_warm": bone,
        "render_3d_512_soft_tissue_warm": soft,
        "render_3d_512_bone_cold": cold,
        "goals_ms": GOALS_MS,
        "goals_met": {
            "cached_slice": slice_cached["median_ms"] <= GOALS_MS["cached_slice"],
            "mip": max(mip_axial["median_ms"], mip_coronal["median_ms"]) <= GOALS_MS["mip"],
            "render_3d_warm": max(bone["median_ms"], soft["median_ms"]) <= GOALS_MS["render_3d"],
            "render_3d_cold": cold["median_ms"] <= GOALS_MS["render_3d"],
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
