"""What one send proposes: each file's meta information and the associations' contexts.

Only each file's File Meta Information is read (:func:`read_entry`); every
(SOP Class, Transfer Syntax) pair present gets one presentation context, plus
the other uncompressed little-endian encoding as a fallback, and a file set
needing more than :data:`MAX_CONTEXTS` contexts is split over several
associations (:func:`plan_associations`).  Why, in :mod:`clara_ray.export.scu`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "MAX_CONTEXTS",
    "AssociationPlan",
    "FileEntry",
    "Pair",
    "fallback_syntax",
    "plan_associations",
    "read_entry",
]

MAX_CONTEXTS = 128
"""Most presentation contexts one A-ASSOCIATE-RQ may carry (odd context ids 1 to 255)."""


@dataclass(frozen=True)
class FileEntry:
    """One file to send, as its File Meta Information describes it."""

    path: Path
    name: str
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    size: int


Pair = tuple[str, str]
"""(SOP Class UID, Transfer Syntax UID): one presentation context."""


@dataclass(frozen=True)
class AssociationPlan:
    """The contexts one association proposes and the files it sends, in the caller's order."""

    contexts: tuple[Pair, ...]
    files: tuple[FileEntry, ...]


def fallback_syntax(transfer_syntax: str) -> str | None:
    """The other uncompressed little-endian encoding of ``transfer_syntax``, if it is one."""
    if transfer_syntax == ExplicitVRLittleEndian:
        return ImplicitVRLittleEndian
    if transfer_syntax == ImplicitVRLittleEndian:
        return ExplicitVRLittleEndian
    return None


def plan_associations(
    entries: Iterable[FileEntry], *, max_contexts: int = MAX_CONTEXTS, fallbacks: bool = True
) -> list[AssociationPlan]:
    """Split ``entries`` into associations of at most ``max_contexts`` contexts.

    One context per (SOP Class, Transfer Syntax) pair present, plus, with
    ``fallbacks``, one per uncompressed little-endian pair with the other VR
    encoding (shared when that pair is present itself).  A pair's files all go
    in the same association; pairs are packed in order of first appearance;
    each association's files keep the order they were given in.
    """
    if not 2 <= max_contexts <= MAX_CONTEXTS:
        raise ValueError(f"max_contexts must be between 2 and {MAX_CONTEXTS}, got {max_contexts}")
    ordered = list(entries)
    groups: dict[Pair, list[int]] = {}
    for index, entry in enumerate(ordered):
        groups.setdefault((entry.sop_class, entry.transfer_syntax), []).append(index)

    plans: list[AssociationPlan] = []
    primaries: list[Pair] = []
    extras: list[Pair] = []
    indexes: list[int] = []

    def flush() -> None:
        contexts = tuple(primaries) + tuple(p for p in extras if p not in primaries)
        files = tuple(ordered[i] for i in sorted(indexes))
        plans.append(AssociationPlan(contexts=contexts, files=files))
        primaries.clear()
        extras.clear()
        indexes.clear()

    for pair, members in groups.items():
        other = fallback_syntax(pair[1]) if fallbacks else None
        needed = {pair} | ({(pair[0], other)} if other else set())
        if primaries and len(set(primaries) | set(extras) | needed) > max_contexts:
            flush()
        primaries.append(pair)
        if other:
            extras.append((pair[0], other))
        indexes.extend(members)
    if primaries:
        flush()
    return plans


def read_entry(path: Path | str) -> FileEntry:
    """A :class:`FileEntry` from the file's meta information only.

    Raises ``ValueError`` when the file is not a DICOM Part 10 file with the
    SOP Class, SOP Instance and Transfer Syntax UIDs in its meta information,
    and ``OSError`` when it cannot be read.
    """
    file = Path(path)
    try:
        meta = read_file_meta_info(file)
    except InvalidDicomError as exc:
        raise ValueError(f"{file} is not a DICOM Part 10 file: {exc}") from exc
    missing = [
        kw
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        if not meta.get(kw)
    ]
    if missing:
        raise ValueError(
            f"{file} lacks {', '.join(missing)} in its file meta information; "
            "expected a DICOM Part 10 file"
        )
    return FileEntry(
        path=file,
        name=str(path),
        sop_class=str(meta.MediaStorageSOPClassUID),
        sop_instance=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax=str(meta.TransferSyntaxUID),
        size=file.stat().st_size,
    )
