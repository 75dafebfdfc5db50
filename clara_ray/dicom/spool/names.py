"""The spool's names: every path component the spool makes from received data.

``<AET>`` is the called AE title with every character outside ``[A-Za-z0-9_-]``
written as ``%XX``, so no AE title can name a path; group and instance UIDs must
match ``^[0-9.]{1,64}$``.  Nothing else from a data set reaches a file name.
Group folders are ``<grouping>-<group uid>`` while open and
``<grouping>-<group uid>-<closed at, ms>`` once closing; instances are
``<sop instance uid>.dcm``; temp files are ``.<random>.tmp``, or
``.<random>.unplaced.tmp`` while their association has no group yet; slots
(:mod:`.slots`) are ``.<random>.slot``.
"""

from __future__ import annotations

import re
import uuid

from clara_ray.config.dicom import check_ae_title

__all__ = [
    "CLOSING_NAME",
    "FILE_NAME",
    "OPEN_NAME",
    "SLOT_SUFFIX",
    "TEMP_SUFFIX",
    "UNPLACED_SUFFIX",
    "aet_folder",
    "aet_from_folder",
    "check_grouping",
    "check_uid",
    "slot_name",
    "temp_name",
]

_UID = re.compile(r"^[0-9.]{1,64}$")
_GROUPINGS = ("study", "series")
_AET_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
OPEN_NAME = re.compile(r"^(study|series)-([0-9.]{1,64})$")
CLOSING_NAME = re.compile(r"^(study|series)-([0-9.]{1,64})-([0-9]{1,16})$")
FILE_NAME = re.compile(r"^[0-9.]{1,64}\.dcm$")
TEMP_SUFFIX = ".tmp"
UNPLACED_SUFFIX = ".unplaced.tmp"
SLOT_SUFFIX = ".slot"


def check_uid(field: str, value: str) -> str:
    if not isinstance(value, str) or not _UID.match(value):
        raise ValueError(f"{field} must be 1-64 digits and dots, got {str(value)[:80]!r}")
    return value


def check_grouping(value: str) -> str:
    if value not in _GROUPINGS:
        raise ValueError(f"grouping must be one of {_GROUPINGS}, got {value!r}")
    return value


def aet_folder(ae_title: str) -> str:
    """The folder name of an AE title: ``[A-Za-z0-9_-]`` kept, anything else as ``%XX``."""
    text = check_ae_title(ae_title)
    return "".join(c if c in _AET_SAFE else f"%{ord(c):02X}" for c in text)


def aet_from_folder(name: str) -> str | None:
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "%":
            try:
                out.append(chr(int(name[i + 1 : i + 3], 16)))
            except ValueError:
                return None
            i += 3
        elif c in _AET_SAFE:
            out.append(c)
            i += 1
        else:
            return None
    text = "".join(out)
    try:
        return text if aet_folder(text) == name else None
    except ValueError:
        return None


def temp_name(unplaced: bool) -> str:
    return f".{uuid.uuid4().hex}{UNPLACED_SUFFIX if unplaced else TEMP_SUFFIX}"


def slot_name() -> str:
    return f".{uuid.uuid4().hex}{SLOT_SUFFIX}"
