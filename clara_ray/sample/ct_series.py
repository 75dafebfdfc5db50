"""Write a :class:`~clara_ray.sample.phantom.Phantom` as a DICOM CT Image Storage series.

One file per slice (``CT000001.dcm`` ...), with every module the CT Image IOD
requires, so that each file passes ``dciodvfy`` and the series passes
``dcentvfy``.  Pixels are stored as 12-bit unsigned values with a rescale
intercept of -1024 (the common scanner encoding).  Slice ``k`` of the phantom
lies at ``origin + k * spacing[0] * normal``, where ``normal`` is the cross
product of the two direction cosines of ``image_orientation``; any orthonormal
pair is accepted, so oblique series can be written too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from clara_ray.sample.phantom import Phantom, generate_phantom

__all__ = ["write_ct_series", "write_sample_study"]

logger = logging.getLogger(__name__)

_INTERCEPT = -1024
_BITS_STORED = 12
_STUDY_DATE = "20240115"
_STUDY_TIME = "093000"
_IDENTITY_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class _Series:
    """What every file of the series shares."""

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    series_number: int
    series_description: str
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]
    transfer_syntax: UID


def _ds(value: float) -> str:
    """A decimal string (DS) value: at most 16 characters, as precise as fits."""
    return format_number_as_ds(float(value))


def _directions(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column direction cosines and the slice normal; checks they are orthonormal."""
    o = np.asarray(orientation, dtype=float)
    if o.shape != (6,):
        raise ValueError(f"image_orientation must hold 6 direction cosines, got {orientation}")
    row, col = o[:3], o[3:]
    if not (
        np.isclose(np.linalg.norm(row), 1, atol=1e-6)
        and np.isclose(np.linalg.norm(col), 1, atol=1e-6)
        and abs(float(row @ col)) < 1e-6
    ):
        raise ValueError(
            f"image_orientation must be two orthonormal direction cosines, got {orientation}"
        )
    return row, col, np.cross(row, col)


def _origin(
    origin: Sequence[float] | None, phantom: Phantom, row: np.ndarray, col: np.ndarray
) -> np.ndarray:
    """The position of phantom slice 0's first pixel; by default the image centre is at 0."""
    if origin is None:
        _, rows, columns = phantom.hu.shape
        dy, dx = phantom.spacing[1], phantom.spacing[2]
        return -((columns - 1) / 2 * dx * row + (rows - 1) / 2 * dy * col)
    position = np.asarray(origin, dtype=float)
    if position.shape != (3,):
        raise ValueError(f"origin must be three patient-space coordinates in mm, got {origin}")
    return position


def _check_hu_range(hu: np.ndarray) -> None:
    lo, hi = int(hu.min()), int(hu.max())
    top = _INTERCEPT + 2**_BITS_STORED - 1
    if lo < _INTERCEPT or hi > top:
        raise ValueError(
            f"phantom HU must lie in [{_INTERCEPT}, {top}] to be stored as "
            f"{_BITS_STORED}-bit values with intercept {_INTERCEPT}, got [{lo}, {hi}]"
        )


def _patient_study_series(ds: Dataset, s: _Series) -> None:
    """Patient, General Study, General Series, Frame of Reference and General Equipment."""
    ds.PatientName = s.patient_name
    ds.PatientID = s.patient_id
    ds.PatientBirthDate = s.patient_birth_date
    ds.PatientSex = "O"
    ds.StudyInstanceUID = s.study_uid
    ds.StudyDate = _STUDY_DATE
    ds.StudyTime = _STUDY_TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "Synthetic phantom study"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = s.series_uid
    ds.SeriesNumber = s.series_number
    ds.SeriesDescription = s.series_description
    ds.SeriesDate = _STUDY_DATE
    ds.SeriesTime = _STUDY_TIME
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = s.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "clara-ray"
    ds.ManufacturerModelName = "Synthetic phantom"


def _image(ds: Dataset, s: _Series, slice_index: int, instance_number: int) -> None:
    """General Image, General Acquisition, Image Plane and CT Image (pixels excepted)."""
    position = s.origin + slice_index * s.spacing[0] * s.normal
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance_number
    ds.ContentDate = _STUDY_DATE
    ds.ContentTime = _STUDY_TIME
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = _STUDY_DATE
    ds.AcquisitionTime = _STUDY_TIME
    ds.BurnedInAnnotation = "NO"
    ds.ImagePositionPatient = [_ds(x) for x in position]
    ds.ImageOrientationPatient = [_ds(x) for x in (*s.row_dir, *s.col_dir)]
    ds.PixelSpacing = [_ds(s.spacing[1]), _ds(s.spacing[2])]
    ds.SliceThickness = _ds(s.spacing[0])
    ds.SliceLocation = _ds(float(position @ s.normal))
    ds.KVP = "120"
    ds.RescaleIntercept = str(_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"


def _pixels(ds: Dataset, hu: np.ndarray, transfer_syntax: UID) -> None:
    """Image Pixel module; compresses when the transfer syntax asks for it."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS_STORED
    ds.HighBit = _BITS_STORED - 1
    ds.PixelRepresentation = 0
    stored = (hu.astype(np.int32) - _INTERCEPT).astype("<u2")
    if transfer_syntax.is_compressed:
        ds.compress(transfer_syntax, stored, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.PixelData = stored.tobytes()


def _slice_dataset(s: _Series, phantom: Phantom, slice_index: int, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[s.series_uid, "instance", str(instance_number)])
    _patient_study_series(ds, s)
    _image(ds, s, slice_index, instance_number)
    _pixels(ds, phantom.hu[slice_index], s.transfer_syntax)
    return ds


def write_ct_series(
    phantom: Phantom,
    dest: Path,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = "PHANTOM^CLARA",
    patient_id: str = "CLARA0001",
    patient_birth_date: str = "19700101",
    series_number: int = 1,
    series_description: str = "Synthetic CT",
    image_orientation: Sequence[float] = _IDENTITY_ORIENTATION,
    origin: Sequence[float] | None = None,
    reverse_order: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write one file per slice into ``dest`` (created); returns the paths by instance number.

    ``origin`` is the position of the first pixel of phantom slice 0; by default
    the image centre lies on the patient-space origin.  ``reverse_order``
    numbers the instances from the last phantom slice to the first (the
    positions do not change).  Given ``study_uid`` and ``series_uid``, the
    files are identical from run to run: the frame of reference and instance
    UIDs derive from the series UID.  ``transfer_syntax`` may be any little
    endian syntax pydicom can encode (compressed ones through ``Dataset.compress``).
    """
    syntax = UID(transfer_syntax)
    if not syntax.is_little_endian:
        raise ValueError(f"transfer_syntax must be little endian, got {syntax.name}")
    _check_hu_range(phantom.hu)
    row, col, normal = _directions(image_orientation)
    first = _origin(origin, phantom, row, col)
    series = series_uid or generate_uid()
    s = _Series(
        study_uid=study_uid or generate_uid(),
        series_uid=series,
        frame_of_reference_uid=generate_uid(entropy_srcs=[series, "frame of reference"]),
        patient_name=patient_name,
        patient_id=patient_id,
        patient_birth_date=patient_birth_date,
        series_number=series_number,
        series_description=series_description,
        row_dir=row,
        col_dir=col,
        normal=normal,
        origin=first,
        spacing=phantom.spacing,
        transfer_syntax=syntax,
    )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    slices = phantom.hu.shape[0]
    for number in range(1, slices + 1):
        index = slices - number if reverse_order else number - 1
        path = dest / f"CT{number:06d}.dcm"
        _slice_dataset(s, phantom, index, number).save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("wrote CT series %s: %d slices under %s", series, slices, dest)
    return paths


def write_sample_study(dest: Path, slices: int = 120, seed: int = 0) -> list[Path]:
    """A new sample CT study (fresh UIDs) of a 512x512 phantom into ``dest``."""
    return write_ct_series(generate_phantom(slices=slices, seed=seed), dest)
