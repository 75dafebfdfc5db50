"""Tests of clara_ray.operators.nrrd, checked with pynrrd: geometry, layout and the operator."""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest

from clara_ray.context import OperatorContext
from clara_ray.operators.nrrd import read_nrrd, write_label_map, write_nrrd
from clara_ray.volume import Volume
from tests.contexts import operator_context

COS, SIN = math.cos(math.radians(30)), math.sin(math.radians(30))
# Columns: LPS unit vectors along column, row and slice index (an oblique, flipped grid).
DIRECTION = ((COS, -SIN, 0.0), (SIN, COS, 0.0), (0.0, 0.0, -1.0))
SPACING = (2.5, 0.7, 0.8)  # slice, row, column
ORIGIN = (-100.5, 20.25, 33.0)


def make_context(tmp_path: Path) -> OperatorContext:
    return operator_context(tmp_path, "export")


def oblique_volume(array: np.ndarray) -> Volume:
    return Volume(array, spacing=SPACING, origin=ORIGIN, direction=DIRECTION)


def write(volume: Volume, *, gzip: bool = True) -> bytes:
    stream = io.BytesIO()
    write_nrrd(stream, volume, gzip=gzip)
    return stream.getvalue()


def pynrrd_read(blob: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Read with pynrrd itself, in ``[slice, row, column]`` order."""
    stream = io.BytesIO(blob)
    header = nrrd.read_header(stream)
    return nrrd.read_data(header, stream, index_order="C"), header


def lps(header: dict[str, Any], column: int, row: int, slice_: int) -> np.ndarray:
    """The LPS point of a voxel by the NRRD header's own index -> space mapping."""
    directions = np.asarray(header["space directions"])
    index = np.array([column, row, slice_], dtype=float)
    return np.asarray(header["space origin"]) + index @ directions


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_pynrrd_reads_array_and_geometry(compressed: bool, dtype: type) -> None:
    array: np.ndarray = np.random.default_rng(0).integers(-50, 100, size=(4, 5, 6)).astype(dtype)
    volume = oblique_volume(array)
    read, header = pynrrd_read(write(volume, gzip=compressed))
    assert read.dtype == array.dtype
    assert np.array_equal(read, array)
    assert list(header["sizes"]) == [6, 5, 4]
    assert header["space"] == "left-posterior-superior"
    assert header["kinds"] == ["domain", "domain", "domain"]
    assert header["encoding"] == ("gzip" if compressed else "raw")
    assert np.allclose(header["space origin"], ORIGIN)
    # Each axis' step is its direction cosine column times its spacing.
    steps = np.asarray(header["space directions"])
    for nrrd_axis, volume_axis in enumerate((2, 1, 0)):
        expected = np.asarray(DIRECTION)[:, nrrd_axis] * SPACING[volume_axis]
        assert np.allclose(steps[nrrd_axis], expected)
        assert np.isclose(np.linalg.norm(steps[nrrd_axis]), SPACING[volume_axis])
    # Index -> LPS through the header matches the Volume's affine for any voxel.
    affine = volume.affine()
    for slice_, row, column in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        point = affine @ np.array([slice_, row, column, 1.0])
        assert np.allclose(lps(header, column, row, slice_), point[:3])


def test_project_reader_agrees_with_pynrrd() -> None:
    array = np.arange(120, dtype=np.uint16).reshape(4, 5, 6)
    blob = write(oblique_volume(array))
    read, header = read_nrrd(io.BytesIO(blob))
    expected, expected_header = pynrrd_read(blob)
    assert np.array_equal(read, expected)
    assert np.allclose(header["space directions"], expected_header["space directions"])


def test_header_and_data_layout() -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    blob = write(Volume(array), gzip=False)
    header, data = blob.split(b"\n\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[0].startswith("NRRD000")
    for line in (
        "type: int16",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: 4 3 2",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: raw",
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
    read, header = pynrrd_read(write(Volume(mask)))
    assert header["type"] == "uint8"
    assert np.array_equal(read, mask.astype(np.uint8))


def test_unsupported_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match="dtype float16 is not supported"):
        write(Volume(np.zeros((2, 2, 2), dtype=np.float16)))


def test_reader_rejects_two_dimensional_nrrd() -> None:
    stream = io.BytesIO()
    nrrd.write(stream, np.zeros((2, 3), dtype=np.uint8), index_order="C")
    stream.seek(0)
    with pytest.raises(ValueError, match="dimension 2 is not supported"):
        read_nrrd(stream)


def test_write_label_map_writes_nrrd_and_legend(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    array = np.zeros((3, 4, 5), dtype=np.uint8)
    array[1, 1:3, 1:4] = 2
    segments = [{"label": 1, "name": "body"}, {"label": 2, "name": "lungs"}]
    labels = oblique_volume(array).with_array(array, segments=segments)
    outputs = write_label_map(ctx, labels=labels)
    assert outputs == {"label_map": ctx.results.path("labels.nrrd")}
    assert sorted(ctx.results.files()) == ["labels.json", "labels.nrrd"]
    read, header = pynrrd_read(ctx.results.read_bytes("labels.nrrd"))
    assert np.array_equal(read, array)
    assert header["encoding"] == "gzip"
    assert header["space"] == "left-posterior-superior"
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
