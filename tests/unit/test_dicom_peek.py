"""peek(): identifiers from the encoded header, and the structural check of the whole data set."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from clara_ray.dicom import peek as peek_module
from clara_ray.dicom.peek import Identifiers, MalformedDatasetError, peek
from clara_ray.sample import generate_phantom, write_ct_series

PATIENT = "PHANTOM^CLARA"


def split_file(path: Path) -> tuple[bytes, str]:
    """(encoded data set, transfer syntax) of a Part 10 file."""
    raw = path.read_bytes()
    group_length = struct.unpack_from("<L", raw, 132 + 8)[0]
    start = 132 + 12 + group_length
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return raw[start:], syntax


def _write(tmp_path: Path, syntax: str) -> Path:
    phantom = generate_phantom(slices=2, rows=32, columns=32)
    return write_ct_series(
        phantom, tmp_path / syntax, transfer_syntax=syntax, patient_name=PATIENT
    )[1]


def _encode(ds: Dataset, syntax: str) -> bytes:
    uid = UID(syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = uid.is_little_endian
    fp.is_implicit_VR = uid.is_implicit_VR
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = compressor.compress(raw) + compressor.flush()
    return raw


def _image(rows: int = 4, columns: int = 4, pixel_bytes: int | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "CT"
    ds.PatientName = PATIENT
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
    ds.PixelData = b"\x01\x02" * (rows * columns) if pixel_bytes is None else b"\x00" * pixel_bytes
    return ds


def _boundaries(data: bytes, syntax: str) -> set[int]:
    """Offsets where a top-level element ends, according to pydicom."""
    uid = UID(syntax)
    ends = set()
    fp = BytesIO(data)
    for _elem in data_element_generator(fp, uid.is_implicit_VR, uid.is_little_endian):
        ends.add(fp.tell())
    return ends


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
        JPEGLSLossless,
    ],
)
def test_identifiers_match_pydicom(tmp_path: Path, syntax: str) -> None:
    path = _write(tmp_path, syntax)
    data, read_syntax = split_file(path)
    assert read_syntax == syntax
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert peek(data, syntax) == Identifiers(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        modality="CT",
    )


def test_big_endian_is_read(tmp_path: Path) -> None:
    ids = peek(_encode(_image(), ExplicitVRBigEndian), ExplicitVRBigEndian)
    assert (ids.sop_instance_uid, ids.series_instance_uid) == ("1.2.3.4.5", "1.2.3.4.1")


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_every_truncation_is_caught(tmp_path: Path, syntax: str) -> None:
    data, _ = split_file(_write(tmp_path, syntax))
    boundaries = _boundaries(data, syntax)
    cuts = [*range(0, 1200), *range(len(data) - 300, len(data))]
    passed = []
    for cut in cuts:
        try:
            peek(data[:cut], syntax)
        except MalformedDatasetError as exc:
            assert PATIENT not in str(exc)
        else:
            passed.append(cut)
    # A cut between two elements is a complete data set, but a CT image without pixels.
    assert passed == []
    assert len(boundaries & set(cuts)) > 20


def test_truncated_deflate_stream_is_caught(tmp_path: Path) -> None:
    data, syntax = split_file(_write(tmp_path, DeflatedExplicitVRLittleEndian))
    with pytest.raises(MalformedDatasetError, match="deflate stream does not end"):
        peek(data[: len(data) // 2], syntax)
    with pytest.raises(MalformedDatasetError, match="not a valid deflate stream"):
        peek(b"\xff" * 100, syntax)


def test_inflation_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peek_module, "MAX_INFLATED_BYTES", 10_000)
    bomb = _encode(_image(rows=100, columns=100), DeflatedExplicitVRLittleEndian)
    with pytest.raises(MalformedDatasetError, match="inflates beyond 10000 bytes"):
        peek(bomb, DeflatedExplicitVRLittleEndian)


def test_pixel_data_size_must_match_the_image_attributes() -> None:
    with pytest.raises(MalformedDatasetError, match=r"holds 30 bytes, expected 32 \(Rows 4"):
        peek(_encode(_image(pixel_bytes=30), ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    ds = _image(rows=3, columns=3, pixel_bytes=18)
    ds.BitsAllocated = 8
    ds.PixelData = b"\x00" * 10  # 9 bytes, padded to even
    assert peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian).modality == "CT"
    ds.NumberOfFrames = 2
    with pytest.raises(MalformedDatasetError, match="expected 18"):
        peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


def test_image_without_pixel_data_is_truncated() -> None:
    ds = _image()
    del ds.PixelData
    with pytest.raises(MalformedDatasetError, match=r"an image without Pixel Data"):
        peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
    del ds.Rows
    assert peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian).modality == "CT"
    ds.Rows = 4
    with pytest.raises(MalformedDatasetError, match=r"an image without Pixel Data"):
        peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


def test_encapsulated_pixel_data_needs_its_delimiter(tmp_path: Path) -> None:
    data, syntax = split_file(_write(tmp_path, RLELossless))
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    with pytest.raises(MalformedDatasetError, match="sequence delimiter"):
        peek(data[:-8], syntax)
    broken = data[:-8] + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # an undefined-length fragment
    with pytest.raises(MalformedDatasetError, match="fragment item of defined length"):
        peek(broken, syntax)


def test_nested_undefined_length_sequences_are_walked() -> None:
    ds = _image()
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    inner = Dataset()
    inner.CodeValue = "X"
    item.ConceptNameCodeSequence = Sequence([inner])
    item.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([item])
    ds["ReferencedImageSequence"].is_undefined_length = True
    data = _encode(ds, ExplicitVRLittleEndian)
    assert b"\xfe\xff\xdd\xe0" in data  # really undefined length
    assert peek(data, ExplicitVRLittleEndian).sop_instance_uid == "1.2.3.4.5"
    start = data.find(b"\x08\x00\x40\x11")  # (0008,1140)
    for cut in range(start + 1, start + 60):
        with pytest.raises(MalformedDatasetError):
            peek(data[:cut], ExplicitVRLittleEndian)


def test_deep_nesting_is_refused() -> None:
    ds = _image()
    level = ds
    for _ in range(40):
        child = Dataset()
        level.ContentSequence = Sequence([child])
        level = child
    with pytest.raises(MalformedDatasetError, match="nested deeper than 32"):
        peek(_encode(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    ("keyword", "bad", "message"),
    [
        ("SOPInstanceUID", "1.2.X.4.5", r"SOPInstanceUID \(0008,0018\) must be 1-64 digits"),
        ("StudyInstanceUID", "1" * 66, r"StudyInstanceUID \(0020,000D\) must be 1-64 digits"),
        ("SeriesInstanceUID", None, r"SeriesInstanceUID \(0020,000E\) is missing"),
        ("SOPClassUID", None, r"SOPClassUID \(0008,0016\) is missing"),
        ("Modality", "ct/../", r"Modality \(0008,0060\) must be upper-case"),
    ],
)
def test_identifiers_are_validated(keyword: str, bad: str | None, message: str) -> None:
    ds = _image()
    with config.disable_value_validation():
        delattr(ds, keyword)
        if bad is not None:
            setattr(ds, keyword, bad)
        data = _encode(ds, ExplicitVRLittleEndian)
    with pytest.raises(MalformedDatasetError, match=message) as caught:
        peek(data, ExplicitVRLittleEndian)
    assert PATIENT not in str(caught.value)


def test_garbage_and_unknown_syntax_are_refused() -> None:
    with pytest.raises(MalformedDatasetError, match="empty"):
        peek(b"", ExplicitVRLittleEndian)
    with pytest.raises(MalformedDatasetError, match="no valid explicit VR"):
        peek(b"\x08\x00\x16\x00\x01\x02\x00\x00" * 4, ExplicitVRLittleEndian)
    with pytest.raises(MalformedDatasetError, match="is not known"):
        peek(_encode(_image(), ExplicitVRLittleEndian), "1.2.3.4")
    with pytest.raises(MalformedDatasetError, match="unexpected item or delimiter"):
        peek(b"\xfe\xff\x00\xe0\x00\x00\x00\x00", ImplicitVRLittleEndian)


def test_is_a_value_error() -> None:
    assert issubclass(MalformedDatasetError, ValueError)
