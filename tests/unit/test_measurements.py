"""Tests of clara_ray.operators.measurements (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clara_ray.context import OperatorContext
from clara_ray.operators.measurements import MEASUREMENTS_FILE, measure, measure_segments
from clara_ray.volume import SeriesReference, Volume
from tests.contexts import operator_context

SPACING = (2.0, 1.0, 1.0)


def make_context(tmp_path: Path) -> OperatorContext:
    return operator_context(tmp_path, "measure")


def cube_volumes() -> tuple[Volume, Volume, np.ndarray]:
    """A 10x10x10 cube labelled 1 (2 mL at 2x1x1 mm) in a 20^3 grid, with distinct HU values."""
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    cube_hu = np.arange(1000, dtype=np.int16).reshape(10, 10, 10) - 300
    hu = np.full((20, 20, 20), -1000, dtype=np.int16)
    hu[5:15, 5:15, 5:15] = cube_hu
    source = SeriesReference("1.2.3", "1.2.3.4", "1.2.3.5", "CT")
    volume = Volume(hu, spacing=SPACING, source=source)
    segments = [{"label": 1, "name": "cube"}, {"label": 2, "name": "absent"}]
    return volume.with_array(labels, segments=segments), volume, cube_hu


def test_cube_volume_and_hu_statistics() -> None:
    labels, volume, cube_hu = cube_volumes()
    result = measure(labels, volume)
    cube, absent = result["segments"]
    assert cube["label"] == 1
    assert cube["name"] == "cube"
    assert cube["voxel_count"] == 1000
    assert cube["volume_ml"] == 2.0
    assert cube["hu"] == pytest.approx(
        {
            "mean": float(cube_hu.mean()),
            "std": float(cube_hu.std()),
            "min": -300.0,
            "max": 699.0,
            "median": 199.5,
        }
    )
    assert absent == {
        "label": 2,
        "name": "absent",
        "voxel_count": 0,
        "volume_ml": 0.0,
        "hu": {"mean": None, "std": None, "min": None, "max": None, "median": None},
    }
    assert result["grid"] == {
        "shape": [20, 20, 20],
        "spacing": [2.0, 1.0, 1.0],
        "voxel_volume_mm3": 2.0,
    }
    assert result["series_instance_uid"] == "1.2.3.4"


def test_operator_writes_measurements_json(tmp_path: Path) -> None:
    labels, volume, _ = cube_volumes()
    ctx = make_context(tmp_path)
    outputs = measure_segments(ctx, labels=labels, volume=volume)
    assert list(outputs) == ["measurements"]
    assert ctx.results.files() == [MEASUREMENTS_FILE]
    written = json.loads(ctx.results.read_bytes(MEASUREMENTS_FILE))
    assert written == outputs["measurements"]


def test_segments_named_by_value_without_metadata() -> None:
    _, volume, _ = cube_volumes()
    array = np.zeros(volume.shape, dtype=np.int32)
    array[0, 0, :3] = 7
    result = measure(Volume(array, spacing=SPACING), Volume(volume.array, spacing=SPACING))
    [segment] = result["segments"]
    assert (segment["label"], segment["name"], segment["voxel_count"]) == (7, "segment 7", 3)
    assert segment["volume_ml"] == pytest.approx(0.006)
    assert result["series_instance_uid"] is None


def test_mismatched_grid_is_rejected() -> None:
    labels, volume, _ = cube_volumes()
    with pytest.raises(ValueError, match=r"labels has shape \(10, 20, 20\)"):
        measure(Volume(labels.array[:10]), volume)
    with pytest.raises(ValueError, match="labels has spacing"):
        measure(Volume(labels.array, spacing=(1.0, 1.0, 1.0)), volume)


def test_non_integer_labels_are_rejected() -> None:
    labels, volume, _ = cube_volumes()
    with pytest.raises(TypeError, match="labels must hold integers, got dtype float32"):
        measure(labels.with_array(labels.array.astype(np.float32)), volume)
