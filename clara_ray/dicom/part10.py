"""DICOM Part-10 file headers for received data sets: preamble, ``DICM`` and File Meta.

The receiver writes this header into each spool temp file before the data set's
fragments (:mod:`clara_ray.dicom.receive`), so a stored instance is a complete
Part-10 file without pydicom encoding anything per instance.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

__all__ = ["file_preamble_and_meta", "printable"]


def printable(text: str, limit: int) -> str:
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)[:limit]


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xL", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _even(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_preamble_and_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for a received data set."""
    body = b"".join(
        (
            _element(2, 0x0001, b"OB", b"\x00\x01"),
            _element(2, 0x0002, b"UI", _even(sop_class, b"\x00")),
            _element(2, 0x0003, b"UI", _even(sop_instance, b"\x00")),
            _element(2, 0x0010, b"UI", _even(transfer_syntax, b"\x00")),
            _element(2, 0x0012, b"UI", _even(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
            _element(2, 0x0013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
            _element(2, 0x0016, b"AE", _even(printable(source_ae, 16) or "UNKNOWN", b" ")),
        )
    )
    return b"\x00" * 128 + b"DICM" + _element(2, 0x0000, b"UL", struct.pack("<L", len(body))) + body
