"""Tests of clara_ray.operators.nrrd: NRRD round trips and the label-map operator (no Ray)."""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from clara_ray.context import OperatorContext
from clara_ray.operators.nrrd import read_nrrd, write_label_map, write_nrrd
from clara_ray.volume import Volume
from tests.contexts import operator_context

COS, SIN = math.cos(math.radians(30)), math.sin(math.radians(30))
# Columns: LPS unit vectors along column, row and slice index (an oblique, flipped grid).
DIRECTION = ((COS, -SIN, 0.0), (SIN, COS, 0.0), (0.0, 0.0, -1.0))


def make_context(tmp_path: Path) -> OperatorContext:
    return operator_context(tmp_path, "export")


def oblique_volume(array: np.ndarray) -> Volume:
    return Volume(array, spacing=(2.5, 0.7, 0.8), origin=(-100.5, 20.25, 33.0), direction=DIRECTION)


def write(volume: Volume, *, gzip: bool = True) -> bytes:
    stream = io.BytesIO()
    write_nrrd(stream, volume, gzip=gzip)
    return stream.getvalue()


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip_keeps_array_and_geometry(compressed: bool, dtype: type) -> None:
    array = np.random.default_rng(0).integers(-50, 100, size=(4, 5, 6)).astype(dtype)
    volume = oblique_volume(array)
    read, header = read_nrrd(io.BytesIO(write(volume, gzip=compressed)))
    assert read.dtype == array.dtype
    assert np.array_equal(read, array)
    affine = volume.affine()
    assert header["sizes"] == [6, 5, 4]
    assert header["space"] == "left-posterior-superior"
    assert header["encoding"] == ("gzip" if compressed else "raw")
    # NRRD axis order is (column, row, slice): the affine's index columns reversed.
    expected = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]
    assert np.allclose(header["space directions"], expected)
    assert np.allclose(header["space directions"][0], np.asarray(DIRECTION)[:, 0] * 0.8)
    assert np.allclose(header["space origin"], (-100.5, 20.25, 33.0))


def test_header_and_data_layout() -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    blob = write(Volume(array), gzip=False)
    header, data = blob.split(b"\n\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[0] == "NRRD0004"
    for line in (
        "type: int16",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: 4 3 2",
        "space directions: (1.0,0.0,0.0) (0.0,1.0,0.0) (0.0,0.0,1.0)",
        "endian: little",
        "encoding: raw",
        "space origin: (0.0,0.0,0.0)",
    ):
        assert line in lines
    # Column index is fastest, as NRRD's first axis must be.
    assert data == array.astype("<i2").tobytes(order="C")


def test_gzip_payload_is_standard_gzip() -> None:
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    _, data = write(Volume(array)).split(b"\n\n", 1)
    assert gzip.decompress(data) == array.tobytes()


def test_bool_is_written_as_uint8() -> None:
    mask = np.zeros((2, 3, 3), dtype=bool)
    mask[1, 1, 1] = True
    read, header = read_nrrd(io.BytesIO(write(Volume(mask))))
    assert header["type"] == "uint8"
    assert np.array_equal(read, mask.astype(np.uint8))


def test_unsupported_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match="dtype float16 is not supported"):
        write(Volume(np.zeros((2, 2, 2), dtype=np.float16)))


def test_reader_rejects_non_nrrd() -> None:
    with pytest.raises(ValueError, match="not an NRRD file"):
        read_nrrd(io.BytesIO(b"P5\n2 2\n255\n\n...."))


def test_write_label_map_writes_nrrd_and_legend(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    array = np.zeros((3, 4, 5), dtype=np.uint8)
    array[1, 1:3, 1:4] = 2
    segments = [{"label": 1, "name": "body"}, {"label": 2, "name": "lungs"}]
    labels = oblique_volume(array).with_array(array, segments=segments)
    outputs = write_label_map(ctx, labels=labels)
    assert outputs == {"label_map": ctx.results.path("labels.nrrd")}
    assert sorted(ctx.results.files()) == ["labels.json", "labels.nrrd"]
    read, header = read_nrrd(io.BytesIO(ctx.results.read_bytes("labels.nrrd")))
    assert np.array_equal(read, array)
    assert header["encoding"] == "gzip"
    assert np.allclose(header["space origin"], labels.origin)
    legend = json.loads(ctx.results.read_bytes("labels.json"))
    assert legend == {"label_map": "labels.nrrd", "segments": segments}


def test_write_label_map_names_legend_after_file(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    array = np.ones((2, 2, 2), dtype=np.uint8)
    write_label_map(ctx, labels=Volume(array), filename="seg/organs.nrrd")
    assert sorted(ctx.results.files()) == ["seg/organs.json", "seg/organs.nrrd"]
    legend = json.loads(ctx.results.read_bytes("seg/organs.json"))
    assert legend["segments"] == [{"label": 1, "name": "segment 1"}]


def test_write_label_map_checks_args(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    labels = Volume(np.ones((2, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"filename must end in \.nrrd, got 'labels\.nii'"):
        write_label_map(ctx, labels=labels, filename="labels.nii")
    with pytest.raises(TypeError, match="labels must hold integers, got dtype float64"):
        write_label_map(ctx, labels=labels.with_array(np.ones((2, 2, 2))))
