"""Coded values of derived objects: what each named segment is, and the units of measurements.

Segments are described in SEG by a *segmented property category* (CID 7150)
and *type* (CID 7151 and the context groups it includes), SNOMED-CT codes
from pydicom's code dictionary.  The names known here are those of the
built-in segmentations (``body``, ``lungs``, ``bone``, ``liver``); any other
name is described as generic tissue, with one log line, so that the object
is still valid but says no more than it knows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "ALGORITHM_FAMILIES",
    "GENERIC",
    "HOUNSFIELD_UNIT",
    "MILLILITER",
    "SEGMENT_CODES",
    "SegmentCodes",
    "algorithm_family",
    "procedure_code",
    "segment_codes",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentCodes:
    """The category and type of one segment (SegmentedPropertyCategory/TypeCodeSequence)."""

    category: Code
    type: Code


_ANATOMY = codes.SCT.AnatomicalStructure
_TISSUE = codes.SCT.Tissue

SEGMENT_CODES: dict[str, SegmentCodes] = {
    "body": SegmentCodes(_ANATOMY, codes.SCT.EntireBody),
    "lungs": SegmentCodes(_ANATOMY, codes.SCT.Lung),
    "lung": SegmentCodes(_ANATOMY, codes.SCT.Lung),
    "bone": SegmentCodes(_TISSUE, codes.SCT.Bone),
    "liver": SegmentCodes(_ANATOMY, codes.SCT.Liver),
}
"""Segment name (lower case) -> its codes."""

GENERIC = SegmentCodes(_TISSUE, _TISSUE)
"""The codes of a segment whose name is not in :data:`SEGMENT_CODES`."""

MILLILITER = CodedConcept("ml", "UCUM", "milliliter")
HOUNSFIELD_UNIT = codes.UCUM.HounsfieldUnit

ALGORITHM_FAMILIES = tuple(codes.cid7162.dir(""))
"""Keywords accepted by :func:`algorithm_family` (DICOM CID 7162)."""


def segment_codes(name: str) -> SegmentCodes:
    """The codes describing a segment called ``name`` (case-insensitive).

    Unknown names get the generic category and type *Tissue* (SCT 85756007),
    with an INFO line naming the segment.
    """
    known = SEGMENT_CODES.get(name.strip().lower())
    if known is not None:
        return known
    logger.info(
        "segment %r has no coded anatomy here (known: %s); describing it as generic Tissue",
        name,
        ", ".join(sorted(SEGMENT_CODES)),
    )
    return GENERIC


def algorithm_family(keyword: str | Code) -> Code:
    """A code of CID 7162 (algorithm families) by keyword, e.g. ``"ArtificialIntelligence"``."""
    if isinstance(keyword, Code):
        return keyword
    if keyword not in ALGORITHM_FAMILIES:
        raise ValueError(
            f"algorithm_family must be one of {', '.join(ALGORITHM_FAMILIES)} "
            f"(DICOM CID 7162), got {keyword!r}"
        )
    family: Code = getattr(codes.cid7162, keyword)
    return family


_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
    "NM": codes.LN.NMUnspecifiedBodyRegion,
    "PT": codes.LN.PETUnspecifiedBodyRegion,
}


def procedure_code(modality: str) -> Code:
    """The procedure reported (CID 100) for a source series of ``modality``."""
    return _PROCEDURES.get(modality.upper(), codes.SCT.ImagingProcedure)
