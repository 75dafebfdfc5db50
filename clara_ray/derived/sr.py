"""A TID 1500 measurement report (Comprehensive 3D SR) of the segments of a SEG.

One *volumetric ROI measurements* group per measured segment: it references
the segment of the SEG (and through it the source instances), carries the
segment's tracking UID (so SEG segment and SR group are one finding for a
viewer), its category and type as finding category and type, and the
measurements: volume in mL and, for CT, HU statistics (mean, standard
deviation, minimum, maximum, median of the attenuation coefficient).  The
observer is a device: the algorithm that made the segmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from clara_ray.derived.codes import HOUNSFIELD_UNIT, MILLILITER, procedure_code
from clara_ray.derived.seg import MANUFACTURER, derived_uid

__all__ = ["HU_STATISTICS", "build_measurement_report"]

logger = logging.getLogger(__name__)

HU_STATISTICS = {
    "mean": codes.SCT.Mean,
    "std": codes.SCT.StandardDeviation,
    "min": codes.SCT.Minimum,
    "max": codes.SCT.Maximum,
    "median": codes.SCT.Median,
}
"""Keys of a segment's ``hu`` measurements -> derivation code (CID 7464)."""


@dataclass(frozen=True)
class _Segment:
    number: int
    category: CodedConcept
    type: CodedConcept
    tracking_uid: str | None
    tracking_id: str | None


def _segments(seg: Dataset) -> dict[str, _Segment]:
    """The SEG's segments by SegmentLabel."""
    found: dict[str, _Segment] = {}
    for item in seg.SegmentSequence:
        found[str(item.SegmentLabel)] = _Segment(
            number=int(item.SegmentNumber),
            category=CodedConcept.from_dataset(item.SegmentedPropertyCategoryCodeSequence[0]),
            type=CodedConcept.from_dataset(item.SegmentedPropertyTypeCodeSequence[0]),
            tracking_uid=item.get("TrackingUID"),
            tracking_id=item.get("TrackingID"),
        )
    return found


def _algorithm(seg: Dataset, name: str | None, version: str | None) -> tuple[str, str]:
    """``name`` and ``version``, defaulting to the SEG's first segment's algorithm."""
    item = seg.SegmentSequence[0]
    ident = item.get("SegmentationAlgorithmIdentificationSequence")
    seg_name = str(item.get("SegmentAlgorithmName") or "")
    seg_version = str(ident[0].get("AlgorithmVersion") or "") if ident else ""
    name, version = name or seg_name, version or seg_version
    if not name or not version:
        raise ValueError(
            "algorithm_name and algorithm_version are required when the SEG does not name its "
            f"algorithm (got name={name!r}, version={version!r})"
        )
    return name, version


def _check_series(seg: Dataset, measurements: Mapping[str, Any], sources: Sequence[Dataset]) -> str:
    """The source series UID, checked to be one and the same everywhere; returns the modality."""
    if seg.get("SOPClassUID") != SegmentationStorage:
        raise ValueError(
            f"segmentation must be a Segmentation Storage instance ({SegmentationStorage}), "
            f"got SOP class {seg.get('SOPClassUID')}"
        )
    if not sources:
        raise ValueError("source_datasets is empty; the report must reference the source series")
    series = {str(ds.SeriesInstanceUID) for ds in sources}
    if len(series) != 1:
        raise ValueError(f"source_datasets must come from one series, got {sorted(series)}")
    (uid,) = series
    seg_series = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    if seg_series and uid not in seg_series:
        raise ValueError(
            f"source_datasets are of series {uid}, but the SEG references {sorted(seg_series)}"
        )
    measured = measurements.get("series_instance_uid")
    if measured is not None and measured != uid:
        raise ValueError(
            f"measurements['series_instance_uid'] is {measured}, expected the source series {uid}"
        )
    return str(sources[0].get("Modality") or "")


def _measurements(entry: Mapping[str, Any], with_hu: bool) -> list[hd.sr.Measurement]:
    items = [hd.sr.Measurement(name=codes.SCT.Volume, value=entry["volume_ml"], unit=MILLILITER)]
    hu = entry.get("hu") or {}
    for key, derivation in HU_STATISTICS.items() if with_hu else ():
        value = hu.get(key)
        if value is not None:
            items.append(
                hd.sr.Measurement(
                    name=codes.DCM.AttenuationCoefficient,
                    value=float(value),
                    unit=HOUNSFIELD_UNIT,
                    derivation=derivation,
                )
            )
    return items


def _referenced_segment(seg: Dataset, number: int) -> hd.sr.ReferencedSegment:
    """The SR's reference to one segment of ``seg``.

    highdicom's ``ReferencedSegment.from_segmentation`` reads the segment of each
    frame from the per-frame functional groups; a SEG with a single segment keeps
    it in the shared functional groups instead, so that case is built here.
    """
    frames = seg.get("PerFrameFunctionalGroupsSequence") or []
    if all("SegmentIdentificationSequence" in item for item in frames):
        return hd.sr.ReferencedSegment.from_segmentation(seg, number)
    sources = [
        hd.sr.SourceImageForSegmentation(inst.ReferencedSOPClassUID, inst.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for inst in series.ReferencedInstanceSequence
    ]
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=number,
        source_images=sources,
    )


def _group(
    seg: Dataset,
    segment: _Segment,
    entry: Mapping[str, Any],
    algorithm: hd.sr.AlgorithmIdentification,
    with_hu: bool,
    uid_seed: str | None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    tracking = hd.sr.TrackingIdentifier(
        uid=segment.tracking_uid or derived_uid(uid_seed, "tracking", str(segment.number)),
        identifier=segment.tracking_id or str(entry["name"])[:64],
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=_referenced_segment(seg, segment.number),
        finding_type=segment.type,
        finding_category=segment.category,
        algorithm_id=algorithm,
        measurements=_measurements(entry, with_hu),
    )


def build_measurement_report(
    segmentation: Dataset,
    measurements: Mapping[str, Any],
    source_datasets: Sequence[Dataset],
    *,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    series_number: int = 301,
    series_description: str = "Measurements",
    uid_seed: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding ``measurements`` of the segments of ``segmentation``.

    ``measurements`` is what :func:`clara_ray.operators.measurements.measure`
    returns: ``segments`` with ``name``, ``voxel_count``, ``volume_ml`` and
    ``hu`` statistics.  Each segment with voxels is matched to the SEG segment
    whose SegmentLabel is its name; empty segments are left out with a log
    line.  ``source_datasets`` are the headers of the source series (recorded
    as evidence).  The algorithm defaults to the one the SEG names.  Given
    ``uid_seed``, the series and instance UIDs derive from it.
    """
    modality = _check_series(segmentation, measurements, source_datasets)
    name, version = _algorithm(segmentation, algorithm_name, algorithm_version)
    segments = _segments(segmentation)
    algorithm = hd.sr.AlgorithmIdentification(name=name[:64], version=version[:64])
    with_hu = modality == "CT"
    if not with_hu:
        logger.info("source modality is %r, not CT: HU statistics are left out", modality)
    groups = []
    for entry in measurements.get("segments", []):
        if int(entry.get("voxel_count") or 0) == 0:
            logger.info("segment %r is empty; no measurement group for it", entry.get("name"))
            continue
        segment = segments.get(str(entry["name"]))
        if segment is None:
            raise ValueError(
                f"measurements segment {entry['name']!r} has voxels but the SEG has no segment "
                f"labelled so; SEG segments: {sorted(segments)}"
            )
        groups.append(_group(segmentation, segment, entry, algorithm, with_hu, uid_seed))
    if not groups:
        raise ValueError("measurements has no non-empty segment: nothing to report")
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid(f"{name} {version}", "device"),
        name=name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=f"{name} {version}"[:64],
    )
    observation = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation,
        procedure_reported=procedure_code(modality),
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[segmentation, *source_datasets],
        content=report,
        series_instance_uid=derived_uid(uid_seed, "series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(uid_seed, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=series_description[:64],
    )
    logger.info(
        "built measurement report %s: %d segments of SEG %s",
        sr.SOPInstanceUID,
        len(groups),
        segmentation.SOPInstanceUID,
    )
    return sr
