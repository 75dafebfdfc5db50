"""Read what the receiver needs from an encoded data set, without decoding pixels.

:func:`peek` is on the hot path of every C-STORE.  It does two things:

* a structural walk over the whole encoded data set (every element, nested
  sequence and encapsulated fragment header), checking that each length fits
  in the buffer, that native Pixel Data has the size its image attributes
  announce and that encapsulated Pixel Data ends with a sequence delimiter;
  this catches truncated and corrupted transfers before they reach a payload;
* the identifiers (SOP Class/Instance UID, Study/Series Instance UID,
  Modality), read from the top-level header elements (groups 0008-0020) that
  the walk passes anyway.

The identifiers are ASCII values (UI, CS) that need no character set or
dictionary, so the walk reads them itself instead of handing the header to
pydicom's parser: measured here, that parser alone cost as much as the whole
walk, on a path that runs once per received instance.  pydicom still names
the transfer syntaxes (:class:`pydicom.uid.UID`), and the tests compare every
identifier with what :func:`pydicom.dcmread` reads from the same file.

Errors are :class:`MalformedDatasetError`, whose messages name the element
(tag and keyword), the offset and what was expected, never an element's value
(a data set carries patient names, IDs and birth dates).
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
import zlib
from dataclasses import dataclass

from pydicom.uid import UID

from clara_ray.errors import ClaraError

__all__ = [
    "DEFLATED_TRANSFER_SYNTAXES",
    "DatasetTooLargeError",
    "Identifiers",
    "MalformedDatasetError",
    "peek",
]

UID_PATTERN = re.compile(r"^[0-9.]{1,64}$")
_CODE_STRING = re.compile(r"^[A-Z0-9_ ]{1,16}$")

# Transfer syntaxes whose whole data set is deflated (PS3.5 A.5, A.7, A.8).
DEFLATED_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
)

# A deflated data set may not inflate beyond this (a zip bomb is a malformed data set).
MAX_INFLATED_BYTES = 1024**3
_MAX_DEPTH = 32  # nested sequences; deeper is an attack, not an image

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
# Explicit VRs encoded with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Top-level attributes the walk keeps: the identifiers, and what the Pixel Data size depends on.
_SOP_CLASS, _SOP_INSTANCE, _MODALITY, _STUDY, _SERIES = (
    0x00080016,
    0x00080018,
    0x00080060,
    0x0020000D,
    0x0020000E,
)
_SAMPLES, _PHOTOMETRIC, _FRAMES, _ROWS, _COLUMNS, _BITS = (
    0x00280002,
    0x00280004,
    0x00280008,
    0x00280010,
    0x00280011,
    0x00280100,
)
_WANTED = frozenset(
    {_SOP_CLASS, _SOP_INSTANCE, _MODALITY, _STUDY, _SERIES}
    | {_SAMPLES, _PHOTOMETRIC, _FRAMES, _ROWS, _COLUMNS, _BITS}
)
# Other ways an object with Rows and Columns carries its values (no Pixel Data then): Float
# and Double Float Pixel Data, Pixel Data Provider URL (JPIP), Spectroscopy Data.
_OTHER_PIXELS = frozenset({0x7FE00008, 0x7FE00009, 0x00287FE0, 0x56000020})
_SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip


class MalformedDatasetError(ClaraError, ValueError):
    """An encoded data set is truncated or inconsistent; the message says where and why."""


class DatasetTooLargeError(MalformedDatasetError):
    """A deflated data set inflates beyond the bound it was given."""


@dataclass(frozen=True)
class Identifiers:
    """The identifiers of one received instance; every UID matches ``^[0-9.]{1,64}$``."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    """Walks an encoded data set element by element; remembers some top-level values."""

    def __init__(self, buf: bytes | mmap.mmap, *, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        order = "<" if little else ">"
        self.u16 = struct.Struct(order + "H").unpack_from
        self.u32 = struct.Struct(order + "L").unpack_from
        self.tag_pair = struct.Struct(order + "HH").unpack_from
        self.values: dict[int, bytes] = {}  # top-level values of _WANTED tags
        self.pixel_length: int | None = None  # -1: encapsulated
        self.seen: set[int] = set()  # top-level tags of _OTHER_PIXELS present

    def walk(self, start: int = 0) -> None:
        self._dataset(start, len(self.buf), implicit=self.implicit, depth=0, in_item=False)

    def _dataset(self, pos: int, end: int, *, implicit: bool, depth: int, in_item: bool) -> int:
        """Walk elements from ``pos`` to ``end`` (inside an undefined-length item: up to its
        delimiter); returns the offset after the last element or after the delimiter."""
        buf, u32, tag_pair = self.buf, self.u32, self.tag_pair
        top = depth == 0
        while pos < end:
            if pos + 8 > end:
                raise MalformedDatasetError(
                    f"data set truncated: element header at offset {pos} needs 8 bytes, "
                    f"{end - pos} remain"
                )
            group, element = tag_pair(buf, pos)
            tag = (group << 16) | element
            if group == 0xFFFE:
                if tag == _ITEM_DELIMITER and in_item:
                    return pos + 8
                raise MalformedDatasetError(
                    f"unexpected item or delimiter tag {_tag(tag)} at offset {pos} in a data set"
                )
            vr: bytes | None = None
            if implicit:
                length = u32(buf, pos + 4)[0]
                value_pos = pos + 8
            else:
                vr = buf[pos + 4 : pos + 6]
                if vr in _SHORT_VRS:
                    length = self.u16(buf, pos + 6)[0]
                    value_pos = pos + 8
                elif vr in _LONG_VRS or (vr.isalpha() and vr.isupper()):
                    if pos + 12 > end:
                        raise MalformedDatasetError(
                            f"data set truncated: element {_tag(tag)} header at offset {pos} "
                            f"needs 12 bytes, {end - pos} remain"
                        )
                    length = u32(buf, pos + 8)[0]
                    value_pos = pos + 12
                else:
                    raise MalformedDatasetError(
                        f"element {_tag(tag)} at offset {pos} has no valid explicit VR "
                        "(two upper-case letters expected)"
                    )
            if length == _UNDEFINED:
                pos = self._undefined_length(tag, vr, value_pos, end, implicit, depth)
                continue
            if value_pos + length > end:
                raise MalformedDatasetError(
                    f"data set truncated: element {_tag(tag)} at offset {pos} declares "
                    f"{length} bytes, {end - value_pos} remain"
                )
            if vr == b"SQ":  # implicit VR: only a dictionary knows; there the value just fits
                self._sequence(
                    value_pos,
                    value_pos + length,
                    value_pos + length,
                    implicit=implicit,
                    depth=depth + 1,
                )
            elif top:
                if tag in _WANTED:
                    self.values[tag] = buf[value_pos : value_pos + length]
                elif tag == _PIXEL_DATA:
                    self.pixel_length = length
                elif tag in _OTHER_PIXELS:
                    self.seen.add(tag)
            pos = value_pos + length
        if in_item:
            raise MalformedDatasetError(
                f"data set truncated: an undefined-length item ends at offset {end} "
                "without an item delimiter"
            )
        return pos

    def _undefined_length(
        self, tag: int, vr: bytes | None, pos: int, end: int, implicit: bool, depth: int
    ) -> int:
        if tag == _PIXEL_DATA and depth == 0 and vr in (b"OB", b"OW", None):
            self.pixel_length = -1
            return self._fragments(pos, end)
        if vr == b"SQ" or vr is None:
            return self._sequence(pos, None, end, implicit=implicit, depth=depth + 1)
        if vr == b"UN":  # PS3.5 6.2.2: an undefined-length UN holds implicit VR LE items
            return self._sequence(pos, None, end, implicit=True, depth=depth + 1)
        raise MalformedDatasetError(
            f"element {_tag(tag)} with VR {vr.decode('ascii')} has an undefined length"
        )

    def _sequence(self, pos: int, end: int | None, stop: int, *, implicit: bool, depth: int) -> int:
        """Walk the items of a sequence up to ``end``, or, when ``end`` is None (undefined
        length), up to its delimiter; nothing is read at or beyond ``stop``."""
        if depth > _MAX_DEPTH:
            raise MalformedDatasetError(f"sequences nested deeper than {_MAX_DEPTH} levels")
        while end is None or pos < end:
            if pos + 8 > stop:
                raise MalformedDatasetError(
                    f"data set truncated: a sequence at offset {pos} ends without "
                    "its items or its delimiter"
                )
            group, element = self.tag_pair(self.buf, pos)
            tag = (group << 16) | element
            length = self.u32(self.buf, pos + 4)[0]
            if tag == _SEQUENCE_DELIMITER and end is None:
                return pos + 8
            if tag != _ITEM:
                raise MalformedDatasetError(
                    f"expected an item tag (FFFE,E000) at offset {pos} in a sequence, "
                    f"found {_tag(tag)}"
                )
            pos += 8
            if length == _UNDEFINED:
                pos = self._dataset(pos, stop, implicit=implicit, depth=depth, in_item=True)
                continue
            if pos + length > stop:
                raise MalformedDatasetError(
                    f"data set truncated: a sequence item at offset {pos - 8} declares "
                    f"{length} bytes, {stop - pos} remain"
                )
            self._dataset(pos, pos + length, implicit=implicit, depth=depth, in_item=False)
            pos += length
        if pos != end:
            raise MalformedDatasetError(
                f"sequence items overrun the sequence length at offset {pos}"
            )
        return pos

    def _fragments(self, pos: int, end: int) -> int:
        """Encapsulated Pixel Data: items of defined length, then a sequence delimiter."""
        while True:
            if pos + 8 > end:
                raise MalformedDatasetError(
                    "data set truncated: encapsulated Pixel Data (7FE0,0010) does not end "
                    "with a sequence delimiter (FFFE,E0DD)"
                )
            group, element = self.tag_pair(self.buf, pos)
            tag = (group << 16) | element
            length = self.u32(self.buf, pos + 4)[0]
            if tag == _SEQUENCE_DELIMITER:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise MalformedDatasetError(
                    f"encapsulated Pixel Data (7FE0,0010): expected a fragment item of defined "
                    f"length at offset {pos}, found {_tag(tag)}"
                )
            if pos + 8 + length > end:
                raise MalformedDatasetError(
                    f"data set truncated: a Pixel Data fragment at offset {pos} declares "
                    f"{length} bytes, {end - pos - 8} remain"
                )
            pos += 8 + length

    def us(self, tag: int, keyword: str) -> int | None:
        raw = self.values.get(tag)
        if raw is None:
            return None
        if len(raw) != 2:
            raise MalformedDatasetError(f"{keyword} {_tag(tag)} must be one US value (2 bytes)")
        return int(self.u16(raw, 0)[0])

    def text(self, tag: int) -> str | None:
        raw = self.values.get(tag)
        if raw is None:
            return None
        try:
            return raw.decode("ascii").strip(" \x00")
        except UnicodeDecodeError:
            return "\ufffd"  # never a valid UID or code string


@functools.lru_cache(maxsize=256)
def _is_image_storage(sop_class_uid: str) -> bool:
    """An ``... Image Storage ...`` SOP class: its IOD requires pixels."""
    return "Image Storage" in UID(sop_class_uid).name


def _check_pixels(walker: _Walker, sop_class_uid: str) -> None:
    """Native Pixel Data must hold Rows*Columns*Samples*Frames*BitsAllocated/8 bytes; an
    image (an Image Storage SOP class, or Rows and Columns present) must have its pixels."""
    rows = walker.us(_ROWS, "Rows")
    columns = walker.us(_COLUMNS, "Columns")
    bits = walker.us(_BITS, "BitsAllocated")
    length = walker.pixel_length
    if length is None:
        image = _is_image_storage(sop_class_uid) or (rows is not None and columns is not None)
        if image and not (_OTHER_PIXELS & walker.seen):
            raise MalformedDatasetError(
                "data set truncated: an image without Pixel Data (7FE0,0010)"
            )
        return
    if length < 0:  # encapsulated: fragments checked by the walk
        return
    if rows is None or columns is None or bits is None:
        raise MalformedDatasetError(
            "Pixel Data (7FE0,0010) is present but Rows, Columns or BitsAllocated is missing"
        )
    samples = walker.us(_SAMPLES, "SamplesPerPixel") or 1
    frames = 1
    text = walker.text(_FRAMES)
    if text:
        try:
            frames = int(text)
        except ValueError:
            raise MalformedDatasetError(
                "NumberOfFrames (0028,0008) must be an integer string"
            ) from None
        if frames < 1:
            raise MalformedDatasetError("NumberOfFrames (0028,0008) must be at least 1")
    if walker.text(_PHOTOMETRIC) in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # 4:2:2 chroma subsampling: two samples per pixel on average
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if length not in (expected, expected + (expected & 1)):
        raise MalformedDatasetError(
            f"Pixel Data (7FE0,0010) holds {length} bytes, expected {expected} "
            f"(Rows {rows} x Columns {columns} x SamplesPerPixel {samples} x "
            f"NumberOfFrames {frames} x BitsAllocated {bits} / 8)"
        )


def _inflate(data: memoryview, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        raise MalformedDatasetError("deflated data set is not a valid deflate stream") from None
    if inflater.unconsumed_tail:
        raise DatasetTooLargeError(f"deflated data set inflates beyond {limit} bytes")
    if not inflater.eof:
        raise MalformedDatasetError("data set truncated: the deflate stream does not end")
    return out


@functools.lru_cache(maxsize=64)
def _syntax(transfer_syntax_uid: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) of a transfer syntax."""
    syntax = UID(transfer_syntax_uid)
    if not syntax.is_transfer_syntax:
        raise MalformedDatasetError(f"transfer syntax {transfer_syntax_uid[:70]!r} is not known")
    deflated = syntax in DEFLATED_TRANSFER_SYNTAXES
    return syntax.is_implicit_VR, syntax.is_little_endian, deflated


def _uid(walker: _Walker, tag: int, keyword: str) -> str:
    text = walker.text(tag)
    if text is None:
        raise MalformedDatasetError(f"{keyword} {_tag(tag)} is missing")
    if not UID_PATTERN.match(text):
        raise MalformedDatasetError(
            f"{keyword} {_tag(tag)} must be 1-64 digits and dots, got {text[:70]!r}"
        )
    return text


def peek(
    dataset_bytes: bytes | mmap.mmap,
    transfer_syntax_uid: str,
    *,
    start: int = 0,
    max_inflated: int = MAX_INFLATED_BYTES,
) -> Identifiers:
    """Check the encoded data set's structure and return its identifiers.

    ``dataset_bytes[start:]`` is the data set as received (no preamble, no file
    meta), encoded in ``transfer_syntax_uid``; it may be a read-only ``mmap`` of
    a received file (offsets in error messages then count from the file's start).
    A deflated data set may inflate to at most ``min(max_inflated,
    MAX_INFLATED_BYTES)`` bytes (:class:`DatasetTooLargeError` beyond).  Raises
    :class:`MalformedDatasetError`.
    """
    implicit, little, deflated = _syntax(str(transfer_syntax_uid))
    buf = dataset_bytes
    if deflated:
        # released at once, even on an error: an mmap can then close
        with memoryview(dataset_bytes) as whole, whole[start:] as part:
            buf = _inflate(part, min(max_inflated, MAX_INFLATED_BYTES))
        start = 0
    if len(buf) <= start:
        raise MalformedDatasetError("data set is empty")
    walker = _Walker(buf, implicit=implicit, little=little)
    walker.walk(start)
    sop_class_uid = _uid(walker, _SOP_CLASS, "SOPClassUID")
    _check_pixels(walker, sop_class_uid)
    modality = walker.text(_MODALITY) or ""
    if modality and not _CODE_STRING.match(modality):
        raise MalformedDatasetError(
            "Modality (0008,0060) must be upper-case letters, digits, spaces or '_'"
        )
    return Identifiers(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=_uid(walker, _SOP_INSTANCE, "SOPInstanceUID"),
        study_instance_uid=_uid(walker, _STUDY, "StudyInstanceUID"),
        series_instance_uid=_uid(walker, _SERIES, "SeriesInstanceUID"),
        modality=modality,
    )
