"""The series loader's fast path (header by pydicom, pixel bytes straight into the volume).

Every case is read twice, by the loader as it is and with the fast path turned
off (every file through pydicom), and checked against a reference computed with
pydicom alone; the tests also check which path each file took.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from clara_ray.operators import series_loader
from clara_ray.operators.pixel_read import Slab
from clara_ray.operators.series_loader import read_series
from clara_ray.sample import Phantom, generate_phantom, write_ct_series
from clara_ray.volume import Volume

SERIES = "1.2.826.0.1.3680043.8.498.201"
LOADER_LOG = "clara_ray.operators.series_loader"


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=12, rows=24, columns=20, spacing=(2.0, 0.8, 0.6), seed=3)


@pytest.fixture
def whole_file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the loader read through pydicom as a whole (the fallback)."""
    names: list[str] = []
    original = series_loader._read_slice

    def spy(name: str, fp: IO[bytes]) -> series_loader._Slice | None:
        names.append(name)
        return original(name, fp)

    monkeypatch.setattr(series_loader, "_read_slice", spy)
    return names


def _write(phantom: Phantom, dest: Path, **kwargs: object) -> list[Path]:
    return write_ct_series(phantom, dest, series_uid=SERIES, **kwargs)  # type: ignore[arg-type]


def _files(paths: list[Path]) -> list[tuple[str, io.BytesIO]]:
    return [(p.name, io.BytesIO(p.read_bytes())) for p in paths]


def _generator(paths: list[Path]) -> Iterator[tuple[str, IO[bytes]]]:
    """Like a payload's files: streams open one at a time, the count not known in advance."""
    for p in paths:
        with open(p, "rb") as fp:
            yield p.name, fp


def _pydicom_only(monkeypatch: pytest.MonkeyPatch, files: object) -> list[Volume]:
    with monkeypatch.context() as m:
        m.setattr(series_loader, "native_header", lambda ds: None)
        return read_series(files)  # type: ignore[arg-type]


def _reference(paths: list[Path]) -> np.ndarray:
    """The volume computed with pydicom alone: sorted along the normal, rescaled in float64,
    int16 when every rescale is an integer one and the values fit, else float32."""
    dss = [pydicom.dcmread(p) for p in paths]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda ds: float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal))
    rescales = [
        (float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))) for ds in dss
    ]
    values = np.stack(
        [
            ds.pixel_array.astype(np.float64) * m + b
            for ds, (m, b) in zip(dss, rescales, strict=True)
        ]
    )
    exact = all(m.is_integer() and b.is_integer() for m, b in rescales)
    fits = exact and values.min() >= -32768 and values.max() <= 32767
    return values.astype(np.int16 if fits else np.float32)


def _same_volume(a: Volume, b: Volume) -> None:
    assert a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing and a.origin == b.origin and a.direction == b.direction
    assert a.source == b.source


def _check(monkeypatch: pytest.MonkeyPatch, paths: list[Path], order: list[int]) -> Volume:
    """Loader on the files in ``order``, as it is and pydicom-only, against the reference."""
    ordered = [paths[i] for i in order]
    (fast,) = read_series(_files(ordered))
    (slow,) = _pydicom_only(monkeypatch, _files(ordered))
    _same_volume(fast, slow)
    expected = _reference(paths)
    assert fast.array.dtype == expected.dtype
    np.testing.assert_array_equal(fast.array, expected)
    return fast


def _edit(paths: list[Path], **attributes: object) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _to_signed(paths: list[Path], offset: int, intercept: str) -> None:
    """Store ``stored - offset`` as signed 16-bit values with the given intercept."""
    for path in paths:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array.astype(np.int32) - offset
        ds.PixelRepresentation = 1
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelData = values.astype("<i2").tobytes()
        ds.RescaleIntercept = intercept
        ds.save_as(path)


ORDERS = {
    "sorted": lambda n: list(range(n)),
    "reversed": lambda n: list(range(n))[::-1],
    "shuffled": lambda n: random.Random(n).sample(range(n), n),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(
    ("case", "attributes"),
    [
        ("hu", {}),
        ("fractional", {"RescaleSlope": "0.5", "RescaleIntercept": "-100.25"}),
        ("slope 2", {"RescaleSlope": "2", "RescaleIntercept": "-3000"}),
        ("negative slope", {"RescaleSlope": "-1", "RescaleIntercept": "1000"}),
        ("overflow", {"RescaleIntercept": "31000"}),
        ("no rescale", {"RescaleSlope": None, "RescaleIntercept": None}),
    ],
)
def test_unsigned_slices_match_the_pydicom_path(
    phantom: Phantom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    whole_file_reads: list[str],
    order: str,
    syntax: str,
    case: str,
    attributes: dict[str, str | None],
) -> None:
    paths = _write(phantom, tmp_path, transfer_syntax=syntax)
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)
    volume = _check(monkeypatch, paths, ORDERS[order](len(paths)))
    # the pydicom-only read went through _read_slice for every file; the fast one for none
    assert len(whole_file_reads) == len(paths)
    if case == "hu":
        np.testing.assert_array_equal(volume.array, phantom.hu)


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize(
    ("offset", "intercept"), [(1024, "0"), (0, "-1024"), (3000, "-7"), (40000 - 2**16, "-30000")]
)
def test_signed_slices_match_the_pydicom_path(
    phantom: Phantom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    whole_file_reads: list[str],
    order: str,
    offset: int,
    intercept: str,
) -> None:
    paths = _write(phantom, tmp_path)
    _to_signed(paths, offset, intercept)
    _check(monkeypatch, paths, ORDERS[order](len(paths)))
    assert len(whole_file_reads) == len(paths)  # all from the pydicom-only read


@pytest.mark.parametrize("shape", [(9, 11), (13, 8), (17, 31), (33, 47), (201, 203)])
def test_odd_image_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str], shape: tuple
) -> None:
    phantom = generate_phantom(slices=5, rows=shape[0], columns=shape[1], seed=4)
    paths = _write(phantom, tmp_path)
    volume = _check(monkeypatch, paths, [3, 0, 4, 1, 2])
    assert volume.shape == (5, *shape)
    np.testing.assert_array_equal(volume.array, phantom.hu)


@pytest.mark.parametrize("size", [60_000, 70_000, 200_000])
def test_headers_longer_than_the_first_read(
    phantom: Phantom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    whole_file_reads: list[str],
    size: int,
) -> None:
    paths = _write(phantom, tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.private_block(0x0029, "CLARA TEST", create=True).add_new(0x10, "OB", bytes(size))
        ds.save_as(path)
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _files(paths))
    _same_volume(volume, slow)


def test_undefined_length_sequence_across_the_first_read(
    phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        item.private_block(0x0029, "CLARA TEST", create=True).add_new(0x10, "OB", bytes(70_000))
        item.is_undefined_length_sequence_item = True
        ds.ReferencedImageSequence = [item]
        ds["ReferencedImageSequence"].is_undefined_length = True
        ds.save_as(path)
    assert pydicom.dcmread(paths[0])["ReferencedImageSequence"].is_undefined_length
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _files(paths))
    _same_volume(volume, slow)


def test_the_fast_path_reads_native_files_only_once(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)
    assert volume.source is not None
    assert [i.sop_instance_uid for i in volume.source.instances] == [
        pydicom.dcmread(p).SOPInstanceUID for p in paths
    ]
    assert volume.source.attributes["PatientName"] == "PHANTOM^CLARA"


@pytest.mark.parametrize("syntax", [RLELossless, DeflatedExplicitVRLittleEndian])
def test_other_transfer_syntaxes_take_the_pydicom_path(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str], syntax: str
) -> None:
    paths = _write(phantom, tmp_path, transfer_syntax=syntax)
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == [p.name for p in paths]
    np.testing.assert_array_equal(volume.array, phantom.hu)


def test_big_endian_takes_the_pydicom_path(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = stored.astype(">u2").tobytes()
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == [p.name for p in paths]
    np.testing.assert_array_equal(volume.array, phantom.hu)


def test_stray_bits_send_that_slice_through_pydicom(
    phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    ds = pydicom.dcmread(paths[5])
    ds.PixelData = (ds.pixel_array | np.uint16(0x8000)).tobytes()
    ds.save_as(paths[5])
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == [paths[5].name]
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _files(paths))
    _same_volume(volume, slow)


def test_pixel_data_longer_than_one_frame_uses_the_first(
    phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.PixelData + b"\x00\x00\xff\xff"
        ds.save_as(path)
    (volume,) = read_series(_files(paths))
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _files(paths))
    _same_volume(volume, slow)


def test_truncated_pixel_data_behaves_as_the_pydicom_path(
    phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    paths[2].write_bytes(paths[2].read_bytes()[:-100])
    with pytest.raises(Exception) as fast_error:
        read_series(_files(paths))
    assert whole_file_reads == [paths[2].name]
    with pytest.raises(Exception) as slow_error:
        _pydicom_only(monkeypatch, _files(paths))
    assert type(fast_error.value) is type(slow_error.value)
    assert str(fast_error.value) == str(slow_error.value)


def test_multi_frame_and_missing_tags_are_skipped_as_before(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    paths = _write(phantom, tmp_path)
    _edit(paths[:1], NumberOfFrames="2")
    _edit(paths[1:2], NumberOfFrames="1")
    ds = pydicom.dcmread(paths[-1])
    del ds.PixelSpacing
    ds.save_as(paths[-1])
    with caplog.at_level(logging.INFO, logger=LOADER_LOG):
        (volume,) = read_series(_files(paths))
    assert whole_file_reads == [paths[0].name, paths[-1].name]
    assert f"skipping {paths[0].name} (CT Image Storage): multi-frame image" in caplog.text
    assert f"skipping {paths[-1].name} (CT Image Storage): no PixelSpacing" in caplog.text
    np.testing.assert_array_equal(volume.array, phantom.hu[1:-1])


def test_mixed_fast_and_pydicom_slices_in_one_series(
    phantom: Phantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_file_reads: list[str]
) -> None:
    explicit = _write(phantom, tmp_path / "a")
    rle = _write(phantom, tmp_path / "b", transfer_syntax=RLELossless)
    paths = [rle[i] if i % 3 == 0 else explicit[i] for i in range(len(explicit))]
    (volume,) = read_series(_files(paths[::-1]))
    assert sorted(whole_file_reads) == sorted(p.name for p in paths if p.parent.name == "b")
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _files(paths[::-1]))
    _same_volume(volume, slow)


def test_mixed_sizes_are_still_an_error(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path / "a")
    _write(generate_phantom(slices=3, rows=10, columns=10), tmp_path / "b", origin=(0, 0, 500))
    paths = sorted((tmp_path / "a").iterdir()) + sorted((tmp_path / "b").iterdir())
    with pytest.raises(series_loader.SeriesError, match="has mixed Rows/Columns: \\(24, 20\\)"):
        read_series(_files(paths))


def test_mixed_pixel_spacing_is_reported_as_written(phantom: Phantom, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path)
    _edit(paths[4:5], PixelSpacing=["0.80", "0.5"])
    with pytest.raises(
        series_loader.SeriesError,
        match=r"mixed PixelSpacing: \('0.8', '0.6'\) in .* \('0.80', '0.5'\)",
    ):
        read_series(_files(paths))


@pytest.mark.parametrize("first_chunk", [None, 16])
@pytest.mark.parametrize("slices", [1, 16, 17, 150])
def test_streams_of_unknown_count(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    whole_file_reads: list[str],
    slices: int,
    first_chunk: int | None,
) -> None:
    if first_chunk is not None:  # several chunks: the volume is gathered from them
        monkeypatch.setattr(series_loader, "_STREAM_CHUNK_ROWS", first_chunk)
    phantom = generate_phantom(slices=slices, rows=8, columns=9, seed=5)
    paths = _write(phantom, tmp_path)
    order = random.Random(slices).sample(range(slices), slices)
    ordered = [paths[i] for i in order]
    (volume,) = read_series(_generator(ordered))
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)
    (slow,) = _pydicom_only(monkeypatch, _generator(ordered))
    _same_volume(volume, slow)


class _ReadOnly(io.RawIOBase):
    """A seekable stream without ``readinto`` beyond what RawIOBase gives (reads in 1000s)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(b), 1000))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_streams_returning_short_reads(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str]
) -> None:
    paths = _write(phantom, tmp_path)
    files = [(p.name, _ReadOnly(p.read_bytes())) for p in paths]
    (volume,) = read_series(files)  # type: ignore[arg-type]
    assert whole_file_reads == []
    np.testing.assert_array_equal(volume.array, phantom.hu)


def test_streams_not_at_their_start(phantom: Phantom, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path)
    files = []
    for p in paths:
        fp = io.BytesIO(b"junk" + p.read_bytes())
        fp.seek(4)
        files.append((p.name, fp))
    (volume,) = read_series(files)
    np.testing.assert_array_equal(volume.array, phantom.hu)


def test_two_series_and_orientations_interleaved(
    phantom: Phantom, tmp_path: Path, whole_file_reads: list[str]
) -> None:
    a = _write(phantom, tmp_path / "a")
    small = generate_phantom(slices=4, rows=24, columns=20, seed=9)
    b = write_ct_series(small, tmp_path / "b", series_uid=SERIES + ".2")
    c = _write(small, tmp_path / "c", image_orientation=(0, 1, 0, 0, 0, -1))
    paths = [*a, *b, *c]
    random.Random(2).shuffle(paths)
    volumes = read_series(_generator(paths))
    assert whole_file_reads == []
    shapes = sorted(v.shape for v in volumes)
    assert shapes == [(4, 24, 20), (4, 24, 20), (12, 24, 20)]
    big = next(v for v in volumes if v.shape[0] == 12)
    np.testing.assert_array_equal(big.array, phantom.hu)
    for v in volumes:
        if v.shape[0] == 4:
            np.testing.assert_array_equal(v.array, small.hu)


def test_slab_rows_grow_in_chunks_without_moving() -> None:
    slab = Slab(2, 3, capacity=2)
    for k in range(7):
        row = slab.claim()
        row[...] = k
        del row
        assert slab.commit() == k
    assert slab.single() is None  # 2 + 2 + 4 rows
    assert [int(slab.row(k)[0, 0]) for k in range(7)] == list(range(7))
    with pytest.raises(IndexError):
        slab.row(7)
    one = Slab(2, 3, capacity=4)
    one.claim()[...] = 5
    one.commit()
    one.claim()  # claimed, never committed
    single = one.single()
    assert single is not None and single.shape == (1, 2, 3) and int(single[0, 1, 1]) == 5
