"""Built-in operator: the DICOM files of a payload become an image volume.

:func:`read_series` turns any set of DICOM files into one :class:`Volume` per
series and orientation; :func:`load_series` is the operator that picks one
series out of a payload.  Slices are ordered by their position along the
slice normal (never by InstanceNumber), gaps and duplicates are errors, and
the rescale is applied (int16 when it is exact, else float32).  Each file is
read once.  Native little-endian 16-bit slices take a fast path: pydicom
parses the header only, the pixel bytes go straight from the stream into one
array per stack (in file order), and the slices are put in order and rescaled
in place (see :mod:`clara_ray.operators.pixel_read`).  Any other file is read
whole by pydicom and its pixels decoded by pydicom's decoders.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from clara_ray.context import OperatorContext
from clara_ray.errors import SeriesError
from clara_ray.operators.pixel_read import (
    NativeHeader,
    Slab,
    native_header,
    read_header,
    read_native_pixels,
    stored_range,
)
from clara_ray.storage import PayloadView
from clara_ray.volume import InstanceReference, SeriesReference, Volume

__all__ = ["PATIENT_STUDY_ATTRIBUTES", "load_series", "read_series"]

logger = logging.getLogger(__name__)

PATIENT_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "Manufacturer",
)
"""Copied into :attr:`SeriesReference.attributes` as plain strings ("" when absent)."""

_REQUIRED = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
_GROUP_ORIENTATION_TOL = 0.05  # direction cosines further apart than this: another stack
_SAME_ORIENTATION_TOL = 1e-4  # within a stack, cosines must agree to this
_DUPLICATE_TOL_MM = 1e-3
_GAP_FACTOR = 1.5
_INT16 = np.iinfo(np.int16)
_SLAB_CHUNK_BYTES = 1 << 30  # the most a stack's first chunk reserves (pages are touched as read)
_STREAM_CHUNK_ROWS = 1024  # first chunk when the number of files is not known


@dataclass(frozen=True)
class _Native:
    """A slice read by the fast path: its header values and where its stored values are."""

    header: NativeHeader
    header_bytes: bytes  # the file up to its Pixel Data element, parsed again when needed
    slab: Slab
    index: int
    lo: int | None  # None: unsigned, not computed (at least 0)
    hi: int


@dataclass
class _Slice:
    name: str
    series_uid: str
    position: np.ndarray
    orientation: np.ndarray
    whole: Dataset | None = None  # the pydicom path's dataset
    native: _Native | None = None  # the fast path's values

    @property
    def ds(self) -> Dataset:
        """The dataset (for the fast path: its header, parsed on first use)."""
        if self.whole is None:
            assert self.native is not None
            self.whole = pydicom.dcmread(
                io.BytesIO(self.native.header_bytes), stop_before_pixels=True
            )
        return self.whole


@dataclass
class _Stack:
    """Slices of one series sharing one orientation."""

    series_uid: str
    modality: str
    orientation: np.ndarray
    slices: list[_Slice] = field(default_factory=list)
    slab: Slab | None = None  # where its fast-path slices' stored values are, in file order


def _unsupported(ds: Dataset) -> str | None:
    """Why ``ds`` is not a slice this loader reads, or None when it is."""
    if "PixelData" not in ds:
        return "no pixel data"
    missing = [k for k in _REQUIRED if k not in ds]
    if missing:
        return "no " + ", ".join(missing)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        return "multi-frame image"
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        return "not a greyscale image"
    if "TransferSyntaxUID" not in ds.file_meta:
        return "no transfer syntax in its file meta information"
    return None


def _read_slice(name: str, fp: IO[bytes]) -> _Slice | None:
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=False)
    except InvalidDicomError:
        logger.info("skipping %s: not a DICOM file", name)
        return None
    reason = _unsupported(ds)
    if reason is not None:
        sop_class = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        logger.info("skipping %s (%s): %s", name, sop_class, reason)
        return None
    position = np.asarray(ds.ImagePositionPatient, dtype=float)
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return _Slice(name, str(ds.SeriesInstanceUID), position, orientation, whole=ds)


def _find_stack(stacks: list[_Stack], uid: str, orientation: np.ndarray) -> _Stack | None:
    return next(
        (
            g
            for g in stacks
            if g.series_uid == uid
            and np.abs(g.orientation - orientation).max() <= _GROUP_ORIENTATION_TOL
        ),
        None,
    )


def _read_into(
    fp: IO[bytes], header: NativeHeader, header_bytes: bytes, ahead: memoryview, slab: Slab
) -> _Native | None:
    """The slice's stored values read into the slab's next row (kept only on success)."""
    row = slab.claim()
    if not read_native_pixels(fp, header, row, ahead):
        return None
    found = stored_range(row, header)
    if found is None:
        return None
    return _Native(header, header_bytes, slab, slab.commit(), *found)


def _first_chunk(files: int | None, rows: int, columns: int) -> int:
    """Rows of a stack's first slab chunk: room for every file when their number is known,
    else for a long series (only the rows read are ever touched)."""
    most = max(1, _SLAB_CHUNK_BYTES // max(1, 2 * rows * columns))
    return min(_STREAM_CHUNK_ROWS if files is None else max(1, files), most)


def _read_native(
    name: str, fp: IO[bytes], stacks: list[_Stack], files: int | None
) -> tuple[_Slice, Dataset] | None:
    """The fast path, and the header it read; None (``fp`` back where it was) when it
    does not apply to the file."""
    try:
        start = fp.tell()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        read = read_header(fp)
    except Exception:  # the whole-file read reports it, or reads what this could not
        read = None
    header = None if read is None else native_header(read[0])
    if read is not None and header is not None:
        # Only the header's bytes are kept (parsed again if needed): thousands of parsed
        # headers held to the end would cost the garbage collector more than that.
        ds, header_bytes, ahead = read
        orientation = np.asarray(header.orientation, dtype=float)
        stack = _find_stack(stacks, header.series_uid, orientation)
        slab = stack.slab if stack is not None else None
        if slab is None:  # the stack's first slab (the stack may be new)
            slab = Slab(
                header.rows, header.columns, _first_chunk(files, header.rows, header.columns)
            )
        elif slab.shape != (header.rows, header.columns):  # a misfit, reported later
            slab = Slab(header.rows, header.columns, capacity=1)
        native = _read_into(fp, header, header_bytes, ahead, slab)
        if native is not None:
            position = np.asarray(header.position, dtype=float)
            return _Slice(name, header.series_uid, position, orientation, native=native), ds
    fp.seek(start)
    return None


def _scan(files: Iterable[tuple[str, IO[bytes]]]) -> list[_Stack]:
    """Read every file once and group the image slices by series and orientation."""
    stacks: list[_Stack] = []
    count = len(files) if isinstance(files, Sized) else None
    for name, fp in files:
        native = _read_native(name, fp, stacks, count)
        s, ds = native if native is not None else (_read_slice(name, fp), None)
        if s is None:
            continue
        stack = _find_stack(stacks, s.series_uid, s.orientation)
        if stack is None:
            header = s.ds if ds is None else ds
            stack = _Stack(s.series_uid, str(header.get("Modality") or ""), s.orientation)
            stacks.append(stack)
        if s.native is not None and stack.slab is None:
            stack.slab = s.native.slab
        stack.slices.append(s)
    return stacks


def _size(s: _Slice) -> tuple[int, int]:
    if s.native is not None:
        return s.native.header.rows, s.native.header.columns
    return s.ds.Rows, s.ds.Columns


def _pixel_spacing(s: _Slice) -> tuple[float, ...]:
    if s.native is not None:
        return s.native.header.pixel_spacing
    return tuple(s.ds.PixelSpacing)


def _check_uniform(stack: _Stack) -> None:
    """Rows, columns, pixel spacing and orientation must agree across the stack."""
    first = stack.slices[0]
    for s in stack.slices[1:]:
        for what, a, b in (
            ("Rows/Columns", _size(first), _size(s)),
            ("PixelSpacing", _pixel_spacing(first), _pixel_spacing(s)),
        ):
            if a != b:
                if what == "PixelSpacing":  # as written in the files
                    a, b = tuple(first.ds.PixelSpacing), tuple(s.ds.PixelSpacing)
                raise SeriesError(
                    f"series {stack.series_uid} has mixed {what}: {a} in {first.name}, "
                    f"{b} in {s.name}"
                )
        if np.abs(s.orientation - first.orientation).max() > _SAME_ORIENTATION_TOL:
            raise SeriesError(
                f"series {stack.series_uid} has mixed ImageOrientationPatient: "
                f"{first.orientation.tolist()} in {first.name}, "
                f"{s.orientation.tolist()} in {s.name}"
            )


def _axes(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def _sorted_slices(stack: _Stack, normal: np.ndarray) -> tuple[list[_Slice], float]:
    """The slices ordered along ``normal`` and the slice spacing; gaps and duplicates raise."""
    along = np.array([s.position @ normal for s in stack.slices])
    order = np.argsort(along, kind="stable")
    slices = [stack.slices[i] for i in order]
    along = along[order]
    if len(slices) == 1:
        thickness = float(slices[0].ds.get("SliceThickness") or 0)
        return slices, thickness if thickness > 0 else 1.0
    steps = np.diff(along)
    duplicates = np.flatnonzero(steps <= _DUPLICATE_TOL_MM)
    if duplicates.size:
        i = duplicates[0]
        raise SeriesError(
            f"series {stack.series_uid} has a duplicate slice position {along[i]:.3f} mm "
            f"along the slice normal: {slices[i].name} and {slices[i + 1].name}"
        )
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * spacing)
    if gaps.size:
        i = gaps[0]
        raise SeriesError(
            f"series {stack.series_uid} has a gap of {steps[i]:.3f} mm between slices at "
            f"{along[i]:.3f} and {along[i + 1]:.3f} mm along the slice normal ({slices[i].name} "
            f"and {slices[i + 1].name}); the median spacing is {spacing:.3f} mm"
        )
    _warn_if_sheared(stack, slices, normal)
    return slices, spacing


def _warn_if_sheared(stack: _Stack, slices: list[_Slice], normal: np.ndarray) -> None:
    """Positions off the normal line (gantry tilt) cannot be described by the volume's geometry."""
    offset = slices[-1].position - slices[0].position
    drift = float(np.linalg.norm(offset - (offset @ normal) * normal))
    if drift > 0.5 * min(float(v) for v in _pixel_spacing(slices[0])):
        logger.warning(
            "series %s: slice positions drift %.2f mm off the slice normal (gantry tilt?); "
            "the volume's geometry follows the normal",
            stack.series_uid,
            drift,
        )


def _rescale(s: _Slice) -> tuple[float, float]:
    if s.native is not None:
        return s.native.header.slope, s.native.header.intercept
    ds = s.ds
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (1.0 if slope is None else float(slope), 0.0 if intercept is None else float(intercept))


def _fits_int16(lo: int, hi: int, slope: float, intercept: float) -> bool:
    ends = (slope * lo + intercept, slope * hi + intercept)
    return _INT16.min <= min(ends) and max(ends) <= _INT16.max


def _decode(ds: Dataset) -> tuple[np.ndarray, int, int]:
    """The stored values of one frame, with their minimum and maximum.

    Native little-endian 16-bit data whose values already lie in the range of
    BitsStored is used in place (a zero-copy view of the bytes read); anything
    else (compressed, other widths, stray bits above BitsStored) goes through
    pydicom's decoders.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    rows, columns, signed = int(ds.Rows), int(ds.Columns), bool(ds.PixelRepresentation)
    if (
        not syntax.is_compressed
        and syntax.is_little_endian
        and ds.BitsAllocated == 16
        and len(ds.PixelData) >= 2 * rows * columns
    ):
        raw = np.frombuffer(ds.PixelData, "<i2" if signed else "<u2", rows * columns)
        lo, hi, bits = int(raw.min()), int(raw.max()), int(ds.BitsStored)
        lowest, highest = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        )
        if lowest <= lo and hi <= highest:
            return raw.reshape(rows, columns), lo, hi
    raw = get_decoder(syntax).as_array(ds)[0]
    return raw, int(raw.min()), int(raw.max())


def _wrap16(value: float) -> np.int16:
    """An integer as int16 modulo 2**16."""
    return np.int16(((int(value) + 0x8000) & 0xFFFF) - 0x8000)


def _rescale_into(dst: np.ndarray, raw: np.ndarray, slope: float, intercept: float) -> None:
    """``dst = raw * slope + intercept`` without large temporaries (int16 only when it fits).

    16-bit stored values into int16 are computed modulo 2**16: when the result
    fits int16 (the caller checked) that is the exact result.  ``raw`` may be
    ``dst`` itself.
    """
    if dst.dtype == np.int16 and raw.dtype in (np.dtype(np.int16), np.dtype(np.uint16)):
        values, m, b = raw.view(np.int16), _wrap16(slope), _wrap16(intercept)
        if m != 1:
            np.multiply(values, m, out=dst)
            if b != 0:
                np.add(dst, b, out=dst)
        elif b != 0:
            np.add(values, b, out=dst)
        elif values.ctypes.data != dst.ctypes.data or values.strides != dst.strides:
            np.copyto(dst, values)
    elif dst.dtype == np.int16:
        values = raw if slope == 1 else np.multiply(raw, np.int32(slope), dtype=np.int32)
        np.add(values, np.int32(intercept), out=dst, dtype=np.int32, casting="unsafe")
    else:
        np.add(np.multiply(raw, slope, dtype=np.float64), intercept, out=dst)


def _fits(raw: np.ndarray, lo: int | None, hi: int, slope: float, intercept: float) -> bool:
    """Whether ``raw * slope + intercept`` fits int16 (``lo`` None: unsigned, not yet known)."""
    if lo is None:
        if _fits_int16(0, hi, slope, intercept):
            return True
        lo = int(raw.min())
    return _fits_int16(lo, hi, slope, intercept)


def _native_values(native: _Native) -> np.ndarray:
    """The stored values of a fast-path slice (a view of its slab)."""
    row = native.slab.row(native.index)
    return row if native.header.signed else row.view(np.uint16)


def _stored(s: _Slice) -> tuple[np.ndarray, int | None, int]:
    if s.native is not None:
        return _native_values(s.native), s.native.lo, s.native.hi
    return _decode(s.ds)


def _all_fit(slices: list[_Slice], rescales: list[tuple[float, float]]) -> bool:
    for s, (slope, intercept) in zip(slices, rescales, strict=True):
        assert s.native is not None
        if not _fits(_native_values(s.native), s.native.lo, s.native.hi, slope, intercept):
            return False
    return True


def _in_place(
    stack: _Stack, slices: list[_Slice], rescales: list[tuple[float, float]]
) -> np.ndarray | None:
    """The int16 volume made in the slab itself: slices permuted into order and rescaled.

    None when that does not apply: a slice not read by the fast path (or into
    another slab), or rescaled values that do not fit int16.
    """
    slab = stack.slab
    if (
        slab is None
        or slab.single() is None
        or slab.count != len(slices)
        or any(s.native is None or s.native.slab is not slab for s in slices)
        or not _all_fit(slices, rescales)
    ):
        return None
    order = [s.native.index for s in slices if s.native is not None]
    array = slab.single()
    if array is None:
        return None
    done = [False] * len(order)
    for i in range(len(order)):
        if done[i]:
            continue
        if order[i] == i:
            done[i] = True
            _rescale_into(array[i], array[i], *rescales[i])
            continue
        # Row j receives slice j (in order), whose values are in row order[j]; follow the cycle.
        first, j = array[i].copy(), i
        while True:
            done[j] = True
            k = order[j]
            source = first if k == i else array[k]
            _rescale_into(array[j], source, *rescales[j])
            if k == i:
                break
            j = k
    return array


def _pixels(stack: _Stack, slices: list[_Slice]) -> np.ndarray:
    """Decode each slice into one preallocated array, rescaled.

    int16 when every slope and intercept is an integer and the values fit,
    else float32 (a value that overflows int16 converts what is done so far).
    """
    rescales = [_rescale(s) for s in slices]
    exact = all(m.is_integer() and b.is_integer() for m, b in rescales)
    if exact:
        array = _in_place(stack, slices, rescales)
        if array is not None:
            return array
    rows, columns = _size(slices[0])
    out = np.empty((len(slices), int(rows), int(columns)), dtype=np.int16 if exact else np.float32)
    for i, (s, (slope, intercept)) in enumerate(zip(slices, rescales, strict=True)):
        raw, lo, hi = _stored(s)
        if out.dtype == np.int16 and not _fits(raw, lo, hi, slope, intercept):
            logger.debug(
                "series %s: rescaled values overflow int16, using float32", stack.series_uid
            )
            out = out.astype(np.float32)
        _rescale_into(out[i], raw, slope, intercept)
    return out


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _instance(s: _Slice) -> InstanceReference:
    if s.native is not None:
        header = s.native.header
        return InstanceReference(header.sop_class_uid, header.sop_instance_uid, path=s.name)
    return InstanceReference(
        _text(s.ds.get("SOPClassUID")), _text(s.ds.get("SOPInstanceUID")), path=s.name
    )


def _reference(stack: _Stack, slices: list[_Slice]) -> SeriesReference:
    first = slices[0].ds
    return SeriesReference(
        study_instance_uid=_text(first.get("StudyInstanceUID")),
        series_instance_uid=stack.series_uid,
        frame_of_reference_uid=_text(first.get("FrameOfReferenceUID")),
        modality=stack.modality,
        instances=tuple(_instance(s) for s in slices),
        attributes={k: _text(first.get(k)) for k in PATIENT_STUDY_ATTRIBUTES},
    )


def _assemble(stack: _Stack) -> Volume:
    _check_uniform(stack)
    row, col, normal = _axes(stack.orientation)
    slices, slice_spacing = _sorted_slices(stack, normal)
    pixel_spacing = _pixel_spacing(slices[0])
    return Volume(
        array=_pixels(stack, slices),
        spacing=(slice_spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=(
            float(slices[0].position[0]),
            float(slices[0].position[1]),
            float(slices[0].position[2]),
        ),
        direction=tuple((float(row[i]), float(col[i]), float(normal[i])) for i in range(3)),
        source=_reference(stack, slices),
    )


def read_series(files: Iterable[tuple[str, IO[bytes]]]) -> list[Volume]:
    """One volume per series and orientation found in ``files`` (name, binary stream) pairs.

    Volumes come in the order their first file appeared.  Objects that are not
    positioned single-frame greyscale images (reports, presentation states,
    files that are not DICOM) are skipped with a log line.  Raises
    :class:`SeriesError` when a series has a gap, a duplicate position, or
    mixed image sizes, pixel spacings or orientations.
    """
    return [_assemble(stack) for stack in _scan(files)]


def _describe(stacks: list[_Stack]) -> str:
    return ", ".join(
        f"{s.series_uid} ({s.modality or 'no modality'}, {len(s.slices)} slices)" for s in stacks
    )


def load_series(
    ctx: OperatorContext,
    payload: PayloadView,
    series_uid: str | None = None,
    modality: str | None = "CT",
) -> dict[str, Volume]:
    """Load one image series of the payload as a volume.

    Input ``payload``: the job's payload (DICOM files, any folder layout).
    Output ``volume``: a :class:`Volume` in the series' units (HU for CT), with
    its geometry and a :class:`SeriesReference` to the source instances.
    Args: ``series_uid`` picks a series by SeriesInstanceUID (default: the one
    with the most slices); ``modality`` keeps only series of that modality
    (None: any).  Raises :class:`SeriesError` when no series qualifies.
    """
    stacks = _scan(payload.iter_files())
    candidates = [
        s
        for s in stacks
        if (series_uid is None or s.series_uid == series_uid)
        and (modality is None or s.modality == modality)
    ]
    if not candidates:
        filters = [
            f"SeriesInstanceUID {series_uid}" if series_uid else "",
            f"modality {modality}" if modality else "",
        ]
        wanted = " with " + " and ".join(f for f in filters if f) if any(filters) else ""
        found = _describe(stacks) if stacks else "no image series at all"
        raise SeriesError(
            f"payload {payload.payload_id} has no image series{wanted}; found: {found}"
        )
    chosen = max(candidates, key=lambda s: len(s.slices))
    volume = _assemble(chosen)
    ctx.logger.info(
        "job %s: loaded series %s: %d slices of %dx%d, spacing %s mm",
        ctx.job_id,
        chosen.series_uid,
        *volume.shape,
        tuple(round(v, 4) for v in volume.spacing),
    )
    return {"volume": volume}
