"""Native little-endian 16-bit slices read without pydicom's value conversion.

The series loader's fast path: the start of the file is read into memory and
pydicom parses the header from there up to the Pixel Data element
(``stop_before_pixels``); the few values the loader needs are decoded from
their raw bytes here, and the pixel bytes (those already read, then the rest
of the stream) go straight into a row of a preallocated array.  Anything out of the ordinary
(another transfer syntax, a value that does not decode cleanly, a missing or
odd Pixel Data element, a short read) makes :func:`native_header` or
:func:`read_native_pixels` decline, and the loader reads the file with pydicom
as a whole instead.
"""

from __future__ import annotations

import io
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TypeVar

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "NativeHeader",
    "Slab",
    "native_header",
    "read_exactly",
    "read_header",
    "read_native_pixels",
    "stored_range",
]

NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})

_SERIES_UID = 0x0020000E
_POSITION = 0x00200032
_ORIENTATION = 0x00200037
_PIXEL_SPACING = 0x00280030
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_SAMPLES = 0x00280002
_FRAMES = 0x00280008
_BITS_ALLOCATED = 0x00280100
_BITS_STORED = 0x00280101
_PIXEL_REPRESENTATION = 0x00280103
_SLOPE = 0x00281053
_INTERCEPT = 0x00281052
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018

_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_LONG_VRS = (b"OB", b"OW")
_UNDEFINED_LENGTH = 0xFFFFFFFF

T = TypeVar("T")


class _Decline(Exception):
    """A value the fast path does not decode; the slice goes through pydicom."""


@dataclass(frozen=True)
class NativeHeader:
    """What the loader needs of one native 16-bit greyscale slice."""

    series_uid: str
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    signed: bool
    bits_stored: int
    slope: float
    intercept: float
    sop_class_uid: str
    sop_instance_uid: str
    implicit_vr: bool


_WANTED = frozenset(
    {
        _SERIES_UID,
        _POSITION,
        _ORIENTATION,
        _PIXEL_SPACING,
        _ROWS,
        _COLUMNS,
        _SAMPLES,
        _FRAMES,
        _BITS_ALLOCATED,
        _BITS_STORED,
        _PIXEL_REPRESENTATION,
        _SLOPE,
        _INTERCEPT,
        _SOP_CLASS_UID,
        _SOP_INSTANCE_UID,
    }
)

_Elements = dict[int, object]


def _raw(elements: _Elements, tag: int, vr: str) -> bytes | None:
    """The raw little-endian value of ``tag`` (None when absent); declines anything unusual."""
    elem = elements.get(tag)
    if elem is None:
        return None
    if not isinstance(elem, RawDataElement) or not elem.is_little_endian:
        raise _Decline
    value = elem.value
    if elem.VR not in (None, vr) or not isinstance(value, bytes) or not value:
        raise _Decline
    return value


def _required(elements: _Elements, tag: int, vr: str, decode: Callable[[bytes], T]) -> T:
    value = _raw(elements, tag, vr)
    if value is None:
        raise _Decline
    return decode(value)


def _us(value: bytes) -> int:
    if len(value) != 2:
        raise _Decline
    return int.from_bytes(value, "little")


def _ds(value: bytes) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(b"\\"))
    except ValueError:
        raise _Decline from None


def _ds_n(n: int) -> Callable[[bytes], tuple[float, ...]]:
    def decode(value: bytes) -> tuple[float, ...]:
        values = _ds(value)
        if len(values) != n:
            raise _Decline
        return values

    return decode


def _ui(value: bytes) -> str:
    if b"\\" in value:
        raise _Decline
    return value.decode("latin-1").rstrip("\0 ").strip()


def native_header(ds: Dataset) -> NativeHeader | None:
    """The loader's values from a header read with ``stop_before_pixels``; None to decline.

    Declines unless the transfer syntax is explicit or implicit VR little endian,
    the image is a single-frame, one-sample, 16-bit allocated slice with every
    attribute the loader requires, and each value decodes plainly from its bytes.
    """
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or file_meta.get("TransferSyntaxUID") not in NATIVE_SYNTAXES:
        return None
    elements: _Elements = {int(tag): elem for tag, elem in ds.items() if tag in _WANTED}
    try:
        rows_elem = elements.get(_ROWS)
        if not isinstance(rows_elem, RawDataElement):
            return None
        frames = _raw(elements, _FRAMES, "IS")
        if frames is not None and frames.strip(b" \0") != b"1":
            return None
        samples = _raw(elements, _SAMPLES, "US")
        if (samples is not None and _us(samples) != 1) or _required(
            elements, _BITS_ALLOCATED, "US", _us
        ) != 16:
            return None
        bits_stored = _required(elements, _BITS_STORED, "US", _us)
        if not 1 <= bits_stored <= 16:
            return None
        slope = _raw(elements, _SLOPE, "DS")
        intercept = _raw(elements, _INTERCEPT, "DS")
        sop_class = _raw(elements, _SOP_CLASS_UID, "UI")
        sop_instance = _raw(elements, _SOP_INSTANCE_UID, "UI")
        spacing = _required(elements, _PIXEL_SPACING, "DS", _ds_n(2))
        return NativeHeader(
            series_uid=_required(elements, _SERIES_UID, "UI", _ui),
            position=_required(elements, _POSITION, "DS", _ds_n(3)),
            orientation=_required(elements, _ORIENTATION, "DS", _ds_n(6)),
            pixel_spacing=(spacing[0], spacing[1]),
            rows=_required(elements, _ROWS, "US", _us),
            columns=_required(elements, _COLUMNS, "US", _us),
            signed=_required(elements, _PIXEL_REPRESENTATION, "US", _us) != 0,
            bits_stored=bits_stored,
            slope=1.0 if slope is None else _ds_n(1)(slope)[0],
            intercept=0.0 if intercept is None else _ds_n(1)(intercept)[0],
            sop_class_uid="" if sop_class is None else _ui(sop_class),
            sop_instance_uid="" if sop_instance is None else _ui(sop_instance),
            implicit_vr=bool(rows_elem.is_implicit_VR),
        )
    except _Decline:
        return None


def read_exactly(fp: IO[bytes], n: int) -> bytes:
    """``n`` bytes from ``fp`` (fewer only at the end of the stream), however it chunks reads."""
    data = fp.read(n)
    if len(data) >= n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fp.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_into(fp: IO[bytes], out: memoryview) -> bool:
    """Fill ``out`` from ``fp``; False on a short read."""
    readinto = getattr(fp, "readinto", None)
    if readinto is None:
        data = read_exactly(fp, len(out))
        if len(data) != len(out):
            return False
        out[:] = data
        return True
    done = 0
    while done < len(out):
        got = readinto(out[done:])
        if not got:
            return False
        done += got
    return True


def read_native_pixels(
    fp: IO[bytes], header: NativeHeader, out: np.ndarray, prefix: bytes | memoryview = b""
) -> bool:
    """Read the Pixel Data element that starts ``prefix + fp`` into ``out`` (rows x columns).

    ``prefix`` holds the bytes already read from where ``dcmread(...,
    stop_before_pixels=True)`` stopped, and ``fp`` the rest of the file.  The
    element must be (7FE0,0010), of defined length, at least one frame long and,
    in explicit VR, OB or OW; then its first frame's bytes are read into
    ``out``.  False (``out`` undefined) when any of that does not hold.
    """
    size = 2 * header.rows * header.columns
    if out.nbytes != size or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {size}-byte array, got {out.nbytes} bytes")
    element = 8 if header.implicit_vr else 12
    ahead = memoryview(prefix)
    head = bytes(ahead[:element])
    if len(head) < element:
        head += read_exactly(fp, element - len(head))
    if head[:4] != _PIXEL_DATA_TAG:
        return False
    if header.implicit_vr:
        if len(head) != 8 or head[4:6] in _LONG_VRS:
            return False
        length = int.from_bytes(head[4:8], "little")
    else:
        if len(head) != 12 or head[4:6] not in _LONG_VRS:
            return False
        length = int.from_bytes(head[8:12], "little")
    if length == _UNDEFINED_LENGTH or length < size:
        return False
    target = out.data.cast("B")
    have = ahead[element : element + size]
    target[: len(have)] = have
    return len(have) == size or _read_into(fp, target[len(have) :])


def read_header(fp: IO[bytes], chunk: int = 1 << 16) -> tuple[Dataset, bytes, memoryview] | None:
    """The dataset up to Pixel Data, parsed from memory: ``(dataset, header bytes, ahead)``.

    Reads ``chunk`` bytes (the rest of the file when the header is longer) and
    parses them with ``dcmread(..., stop_before_pixels=True)``; ``ahead`` is what
    was read past the header (the start of the Pixel Data element).  None when
    the parse does not end at a (7FE0,0010) element; pydicom's errors propagate.
    """
    data = read_exactly(fp, chunk)
    whole = len(data) < chunk
    while True:
        buffer = io.BytesIO(data)
        try:
            ds = pydicom.dcmread(buffer, stop_before_pixels=True)
        except Exception:
            if whole:
                raise
        else:
            end = buffer.tell()
            if data[end : end + 4] == _PIXEL_DATA_TAG:
                return ds, data[:end], memoryview(data)[end:]
            if whole:
                return None
        data += fp.read()  # a header longer than the chunk, cut off in the middle
        whole = True


def stored_range(stored: np.ndarray, header: NativeHeader) -> tuple[int | None, int] | None:
    """``(lowest, highest)`` stored value of a slice read as raw int16, or None when a value
    lies outside what BitsStored allows (stray bits: pydicom's decoder masks them).

    For unsigned data the lowest value is not computed (None): it is at least 0.
    """
    bits = header.bits_stored
    if header.signed:
        lo, hi = int(stored.min()), int(stored.max())
        if not -(1 << (bits - 1)) <= lo <= hi <= (1 << (bits - 1)) - 1:
            return None
        return lo, hi
    hi = int(stored.view(np.uint16).max())
    if hi > (1 << bits) - 1:
        return None
    return None, hi


class Slab:
    """Equal-sized int16 slices appended into preallocated chunks, in the order read.

    A row is claimed with :meth:`claim` and kept with :meth:`commit`.  The first
    chunk holds ``capacity`` rows (size it to the number of files when that is
    known: then the slab is one array, see :meth:`single`; memory is only
    touched as rows are read); each further chunk is as large as all before it,
    so nothing read is ever copied to grow.
    """

    def __init__(self, rows: int, columns: int, capacity: int = 64) -> None:
        self.shape = (rows, columns)
        self.count = 0
        self._capacity = max(capacity, 1)
        self._chunks: list[np.ndarray] = []
        self._starts: list[int] = []

    def claim(self) -> np.ndarray:
        """The next free row (valid until the next :meth:`claim` if not committed)."""
        last = self._chunks[-1] if self._chunks else None
        if last is None or self.count - self._starts[-1] == len(last):
            size = self._capacity if last is None else self.count
            try:
                last = np.empty((size, *self.shape), np.int16)
            except MemoryError:  # a reservation the system refuses: a small chunk instead
                size = min(size, 16)
                last = np.empty((size, *self.shape), np.int16)
            self._chunks.append(last)
            self._starts.append(self.count)
        return last[self.count - self._starts[-1]]

    def commit(self) -> int:
        """Keep the claimed row; returns its index."""
        self.count += 1
        return self.count - 1

    def row(self, index: int) -> np.ndarray:
        if not 0 <= index < self.count:
            raise IndexError(f"row {index} of a slab of {self.count}")
        chunk = bisect_right(self._starts, index) - 1
        return self._chunks[chunk][index - self._starts[chunk]]

    def single(self) -> np.ndarray | None:
        """All committed rows as one (count, rows, columns) array, when they lie in one chunk."""
        if len(self._chunks) != 1:
            return None
        chunk = self._chunks[0]
        return chunk if self.count == len(chunk) else chunk[: self.count]
