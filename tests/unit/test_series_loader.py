"""The series loader, against series written by the sample CT writer."""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from clara_ray.context import OperatorContext
from clara_ray.errors import SeriesError
from clara_ray.operators.series_loader import PATIENT_STUDY_ATTRIBUTES, load_series, read_series
from clara_ray.sample import Phantom, generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume

STUDY = "1.2.826.0.1.3680043.8.498.100"
SERIES = "1.2.826.0.1.3680043.8.498.101"
LOADER_LOG = "clara_ray.operators.series_loader"


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=20, rows=64, columns=64, spacing=(2.5, 0.7, 0.7), seed=1)


def _files(folder: Path) -> list[tuple[str, io.BytesIO]]:
    return [
        (p.relative_to(folder).as_posix(), io.BytesIO(p.read_bytes()))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def _read_one(folder: Path) -> Volume:
    volumes = read_series(_files(folder))
    assert len(volumes) == 1
    return volumes[0]


def _write(phantom: Phantom, dest: Path, **kwargs: object) -> list[Path]:
    kwargs = {"study_uid": STUDY, "series_uid": SERIES, **kwargs}
    return write_ct_series(phantom, dest, **kwargs)  # type: ignore[arg-type]


def _rotation(yaw_deg: float, tilt_deg: float) -> np.ndarray:
    a, b = np.deg2rad(yaw_deg), np.deg2rad(tilt_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _edit(paths: list[Path], **attributes: object) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


# -- round trip ----------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_round_trip_gives_the_phantom_hu(phantom: Phantom, tmp_path: Path, syntax: str) -> None:
    paths = _write(phantom, tmp_path, transfer_syntax=syntax)
    volume = _read_one(tmp_path)
    assert volume.array.dtype == np.int16
    assert np.array_equal(volume.array, phantom.hu)
    assert volume.spacing == pytest.approx(phantom.spacing)
    first = pydicom.dcmread(paths[0])
    assert volume.origin == pytest.approx([float(v) for v in first.ImagePositionPatient])
    assert np.allclose(volume.direction, np.eye(3))


def test_series_reference_and_attributes(phantom: Phantom, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path, patient_name="DOE^JANE", patient_id="P42")
    source = _read_one(tmp_path).source
    assert source is not None
    first = pydicom.dcmread(paths[0])
    assert source.study_instance_uid == STUDY
    assert source.series_instance_uid == SERIES
    assert source.frame_of_reference_uid == first.FrameOfReferenceUID
    assert source.modality == "CT"
    assert [i.sop_instance_uid for i in source.instances] == [
        pydicom.dcmread(p).SOPInstanceUID for p in paths
    ]
    assert {i.sop_class_uid for i in source.instances} == {first.SOPClassUID}
    assert set(source.attributes) == set(PATIENT_STUDY_ATTRIBUTES)
    assert all(type(v) is str for v in source.attributes.values())
    assert source.attributes["PatientName"] == "DOE^JANE"
    assert source.attributes["PatientID"] == "P42"
    assert source.attributes["StudyInstanceUID"] == STUDY
    assert source.attributes["AccessionNumber"] == ""


def test_writer_is_deterministic_given_uids(phantom: Phantom, tmp_path: Path) -> None:
    a = _write(phantom, tmp_path / "a")
    b = _write(phantom, tmp_path / "b")
    assert [p.name for p in a] == [f"CT{i:06d}.dcm" for i in range(1, 21)]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))


def test_rescale_is_applied(phantom: Phantom, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path)
    stored = pydicom.dcmread(paths[0]).pixel_array
    assert np.array_equal(stored.astype(int), phantom.hu[0].astype(int) + 1024)
    assert np.array_equal(_read_one(tmp_path).array, phantom.hu)


def test_fractional_rescale_gives_float32(phantom: Phantom, tmp_path: Path) -> None:
    _edit(_write(phantom, tmp_path), RescaleSlope="0.5", RescaleIntercept="-100.25")
    volume = _read_one(tmp_path)
    assert volume.array.dtype == np.float32
    expected = (phantom.hu.astype(np.float64) + 1024) * 0.5 - 100.25
    assert np.array_equal(volume.array, expected.astype(np.float32))


def test_rescale_overflowing_int16_gives_float32(phantom: Phantom, tmp_path: Path) -> None:
    _edit(_write(phantom, tmp_path), RescaleIntercept="31000")
    volume = _read_one(tmp_path)
    assert volume.array.dtype == np.float32
    assert np.array_equal(volume.array, phantom.hu.astype(np.float32) + 1024 + 31000)


def test_stray_bits_above_bits_stored_are_ignored(phantom: Phantom, tmp_path: Path) -> None:
    path = _write(phantom, tmp_path)[3]
    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array | np.uint16(0x8000)).tobytes()  # an overlay bit, say
    ds.save_as(path)
    assert np.array_equal(_read_one(tmp_path).array, phantom.hu)


# -- slice order and geometry ----------------------------------------------------


def test_file_order_does_not_matter(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path)
    files = _files(tmp_path)
    random.Random(0).shuffle(files)
    assert np.array_equal(read_series(files)[0].array, phantom.hu)


def test_reversed_instance_order_gives_the_same_volume(phantom: Phantom, tmp_path: Path) -> None:
    normal = _read_one(_write(phantom, tmp_path / "normal")[0].parent)
    reversed_paths = _write(phantom, tmp_path / "reversed", reverse_order=True)
    # Instance 1 is now the most superior slice: sorting must not trust InstanceNumber.
    first, last = (pydicom.dcmread(reversed_paths[i]) for i in (0, -1))
    assert (
        first.InstanceNumber == 1 and first.ImagePositionPatient[2] > last.ImagePositionPatient[2]
    )
    volume = _read_one(tmp_path / "reversed")
    assert np.array_equal(volume.array, normal.array)
    assert volume.origin == pytest.approx(normal.origin)
    assert volume.spacing == pytest.approx(normal.spacing)
    assert np.allclose(volume.direction, normal.direction)


@pytest.mark.parametrize("reverse_order", [False, True])
def test_oblique_geometry_is_recovered(
    phantom: Phantom, tmp_path: Path, reverse_order: bool
) -> None:
    r = _rotation(30, 20)
    orientation = (*r[:, 0], *r[:, 1])
    paths = _write(
        phantom,
        tmp_path,
        image_orientation=orientation,
        origin=(10.0, -20.0, 30.0),
        reverse_order=reverse_order,
    )
    volume = _read_one(tmp_path)
    assert np.array_equal(volume.array, phantom.hu)
    assert np.allclose(np.asarray(volume.direction), r, atol=1e-6)
    affine = volume.affine()
    assert affine[:3, 3] == pytest.approx((10.0, -20.0, 30.0), abs=1e-4)
    assert volume.source is not None
    positions = {
        ds.SOPInstanceUID: np.asarray(ds.ImagePositionPatient, dtype=float)
        for ds in (pydicom.dcmread(p) for p in paths)
    }
    for k, instance in enumerate(volume.source.instances):
        ipp = positions[instance.sop_instance_uid]
        assert affine @ [k, 0, 0, 1] == pytest.approx([*ipp, 1], abs=1e-4)
        # Pixel (row 5, column 7): IPP + column * column spacing * row cosine + row * ...
        pixel = ipp + 7 * 0.7 * r[:, 0] + 5 * 0.7 * r[:, 1]
        assert affine @ [k, 5, 7, 1] == pytest.approx([*pixel, 1], abs=1e-4)


def test_gantry_tilt_is_warned_about(
    phantom: Phantom, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for path in _write(phantom, tmp_path):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.2 * z, z]  # each slice shifted along y
        ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger=LOADER_LOG):
        volume = _read_one(tmp_path)
    assert np.array_equal(volume.array, phantom.hu)
    assert f"series {SERIES}: slice positions drift 9.50 mm off the slice normal" in caplog.text


def test_single_slice_takes_its_thickness_as_spacing(tmp_path: Path) -> None:
    _write(generate_phantom(slices=1, rows=32, columns=32), tmp_path)
    volume = _read_one(tmp_path)
    assert volume.shape == (1, 32, 32)
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.7))


# -- broken series ---------------------------------------------------------------


def test_missing_slice_is_a_gap(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path)
    (tmp_path / "CT000010.dcm").unlink()
    with pytest.raises(
        SeriesError,
        match=rf"series {SERIES} has a gap of 5\.000 mm between slices at .* "
        r"\(CT000009\.dcm and CT000011\.dcm\); the median spacing is 2\.500 mm",
    ):
        read_series(_files(tmp_path))


def test_duplicate_slice_position_is_an_error(phantom: Phantom, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path)
    ds = pydicom.dcmread(paths[4])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "CT000099.dcm")
    with pytest.raises(SeriesError, match=rf"series {SERIES} has a duplicate slice position"):
        read_series(_files(tmp_path))


def test_mixed_image_sizes_in_one_series_are_an_error(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path / "a")
    _write(generate_phantom(slices=20, rows=32, columns=32), tmp_path / "b")
    with pytest.raises(SeriesError, match=rf"series {SERIES} has mixed Rows/Columns"):
        read_series(_files(tmp_path))


def test_slightly_different_orientations_are_an_error(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path / "a")
    r = _rotation(0.5, 0)
    _write(phantom, tmp_path / "b", image_orientation=(*r[:, 0], *r[:, 1]), origin=(0, 0, 1))
    with pytest.raises(SeriesError, match=rf"series {SERIES} has mixed ImageOrientationPatient"):
        read_series(_files(tmp_path))


def test_distinct_orientations_in_one_series_are_separate_volumes(
    phantom: Phantom, tmp_path: Path
) -> None:
    _write(phantom, tmp_path / "axial")
    sagittal = generate_phantom(slices=5, rows=64, columns=64)
    _write(sagittal, tmp_path / "sagittal", image_orientation=(0, 1, 0, 0, 0, -1))
    volumes = read_series(_files(tmp_path))
    assert [v.shape for v in volumes] == [(20, 64, 64), (5, 64, 64)]
    assert {v.source.series_instance_uid for v in volumes if v.source} == {SERIES}


# -- several series and other objects ---------------------------------------------


def _two_series(phantom: Phantom, folder: Path) -> str:
    """The phantom as SERIES plus a smaller second series of the same study; returns its UID."""
    other = "1.2.826.0.1.3680043.8.498.102"
    _write(phantom, folder / "a")
    _write(generate_phantom(slices=8, rows=32, columns=32, seed=2), folder / "b", series_uid=other)
    return other


def test_two_series_mixed_are_both_returned(phantom: Phantom, tmp_path: Path) -> None:
    other = _two_series(phantom, tmp_path)
    files = _files(tmp_path)
    random.Random(1).shuffle(files)
    volumes = {v.source.series_instance_uid: v for v in read_series(files) if v.source}
    assert set(volumes) == {SERIES, other}
    assert np.array_equal(volumes[SERIES].array, phantom.hu)
    assert volumes[other].shape == (8, 32, 32)


def _add_report(folder: Path) -> None:
    """A Basic Text SR (no pixel data, no position) and a file that is not DICOM."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "PHANTOM^CLARA"
    ds.save_as(folder / "report.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM\n")


def test_non_image_objects_are_skipped_with_a_log_line(
    phantom: Phantom, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(phantom, tmp_path)
    _add_report(tmp_path)
    with caplog.at_level(logging.DEBUG, logger=LOADER_LOG):
        volume = _read_one(tmp_path)
    assert np.array_equal(volume.array, phantom.hu)
    skipped = [r.getMessage() for r in caplog.records if r.name == LOADER_LOG]
    assert any("report.dcm" in m and "no pixel data" in m for m in skipped), skipped
    assert any("notes.txt" in m and "not a DICOM file" in m for m in skipped), skipped
    assert "PHANTOM" not in caplog.text  # never log patient data


# -- the operator -----------------------------------------------------------------


def _context(tmp_path: Path, source: Path) -> OperatorContext:
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("payload-1", source)
    storage.seal_payload("payload-1")
    payload = storage.payload_view("payload-1")
    return OperatorContext(
        job_id="job-1",
        job_name="test",
        pipeline="load",
        operator="load-series",
        payload=payload,
        results=storage.results("job-1", "load-series"),
    )


def test_load_series_picks_the_series_with_most_slices(
    phantom: Phantom, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _two_series(phantom, tmp_path / "in")
    _add_report(tmp_path / "in")
    ctx = _context(tmp_path, tmp_path / "in")
    with caplog.at_level(logging.DEBUG):
        out = load_series(ctx, ctx.payload)
    assert set(out) == {"volume"}
    assert np.array_equal(out["volume"].array, phantom.hu)
    assert f"loaded series {SERIES}: 20 slices of 64x64" in caplog.text
    assert "PHANTOM" not in caplog.text


def test_load_series_by_uid(phantom: Phantom, tmp_path: Path) -> None:
    other = _two_series(phantom, tmp_path / "in")
    ctx = _context(tmp_path, tmp_path / "in")
    volume = load_series(ctx, ctx.payload, series_uid=other)["volume"]
    assert volume.shape == (8, 32, 32)
    assert volume.source is not None and volume.source.series_instance_uid == other


def test_load_series_without_a_match_names_what_it_found(phantom: Phantom, tmp_path: Path) -> None:
    _write(phantom, tmp_path / "in")
    ctx = _context(tmp_path, tmp_path / "in")
    with pytest.raises(
        SeriesError,
        match=rf"payload payload-1 has no image series with modality MR; "
        rf"found: {SERIES} \(CT, 20 slices\)",
    ):
        load_series(ctx, ctx.payload, modality="MR")
    with pytest.raises(SeriesError, match=r"no image series with SeriesInstanceUID 1\.2\.3 and"):
        load_series(ctx, ctx.payload, series_uid="1.2.3")


def test_load_series_on_a_payload_without_images(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    _add_report(tmp_path / "in")
    ctx = _context(tmp_path, tmp_path / "in")
    with pytest.raises(SeriesError, match="has no image series; found: no image series at all"):
        load_series(ctx, ctx.payload, modality=None)


# -- writer arguments ---------------------------------------------------------------


def test_writer_rejects_bad_arguments(phantom: Phantom, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be two orthonormal direction cosines"):
        _write(phantom, tmp_path, image_orientation=(1, 0, 0, 1, 0, 0))
    with pytest.raises(ValueError, match=r"origin must be three patient-space coordinates"):
        _write(phantom, tmp_path, origin=(1.0, 2.0))
    with pytest.raises(ValueError, match="must be little endian"):
        _write(phantom, tmp_path, transfer_syntax=ExplicitVRBigEndian)
    hot = Phantom(hu=np.full((2, 8, 8), 4000, np.int16), spacing=(1.0, 1.0, 1.0), labels={})
    with pytest.raises(ValueError, match=r"HU must lie in \[-1024, 3071\].*got \[4000, 4000\]"):
        _write(hot, tmp_path)
    assert not any(tmp_path.iterdir())
