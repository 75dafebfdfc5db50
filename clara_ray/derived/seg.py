"""A DICOM Segmentation (SEG) from a label map or a probability map on its source grid.

The map is on the grid of the series it was computed from: slice ``i`` of
its array lies on source instance ``i`` (``labels.source.instances[i]``, the
order the series loader sorted the slices in).  :func:`build_segmentation`
checks that correspondence against the source headers before anything is
encoded (a flipped or shuffled map is an error, not a SEG shown upside down)
and hands highdicom one frame per source instance, so each frame takes its
position, orientation and source reference from the instance it was derived
from.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from clara_ray.derived.codes import algorithm_family as family_code
from clara_ray.derived.codes import segment_codes
from clara_ray.volume import Volume

__all__ = ["MANUFACTURER", "SegmentSpec", "build_segmentation", "derived_uid", "software_version"]

logger = logging.getLogger(__name__)

MANUFACTURER = "clara-ray"
_ORIENTATION_TOL = 1e-3
_MAX_LABEL = 65535


def software_version() -> str:
    """The installed clara-ray version (``"unknown"`` when not installed as a package)."""
    try:
        return importlib.metadata.version("clara-ray")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def derived_uid(seed: str | None, *parts: str) -> str:
    """A UID derived from ``seed`` and ``parts`` (the same on a retry), or a fresh one."""
    if seed is None:
        return str(generate_uid())
    return str(generate_uid(entropy_srcs=[seed, *parts]))


@dataclass(frozen=True)
class SegmentSpec:
    """One segment to encode: its SEG segment number, the label value it came from, its name."""

    number: int
    label: int
    name: str


def _legend(labels: Volume) -> dict[int, str]:
    """``metadata["segments"]`` as label value -> name, validated."""
    entries = labels.metadata.get("segments") or []
    legend: dict[int, str] = {}
    for entry in entries:
        label, name = entry.get("label"), entry.get("name")
        if not isinstance(label, int | np.integer) or not 0 < int(label) <= _MAX_LABEL:
            raise ValueError(
                f"labels.metadata['segments'] entry {entry!r}: label must be an integer "
                f"in 1..{_MAX_LABEL}"
            )
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"labels.metadata['segments'] entry {entry!r}: name must be a non-empty string"
            )
        if int(label) in legend:
            raise ValueError(f"labels.metadata['segments'] lists label {label} twice")
        if name in legend.values():
            raise ValueError(f"labels.metadata['segments'] names two labels {name!r}")
        legend[int(label)] = name
    return legend


def _present_labels(array: np.ndarray) -> list[int]:
    """The non-zero values of ``array``, sorted (slice by slice for small unsigned types)."""
    if array.dtype.kind == "b":
        return [1] if array.any() else []
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        counts = np.zeros(1 << (8 * array.dtype.itemsize), dtype=np.int64)
        for plane in array:
            counts += np.bincount(plane.ravel(), minlength=counts.size)
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    return [int(v) for v in np.unique(array) if v != 0]


def _binary_segments(array: np.ndarray, legend: dict[int, str]) -> list[SegmentSpec]:
    """One segment per label value present, numbered 1..N in label order."""
    if array.dtype.kind not in "biu":
        raise TypeError(
            f"labels.array must hold integer labels for a binary SEG, got dtype {array.dtype} "
            "(use fractional=True for a probability map)"
        )
    present = _present_labels(array)
    if present and (present[0] < 0 or present[-1] > _MAX_LABEL):
        raise ValueError(
            f"labels.array values must lie in 0..{_MAX_LABEL}, got {present[0]}..{present[-1]}"
        )
    if not present:
        raise ValueError("labels.array has no non-zero voxel: a SEG needs at least one segment")
    absent = sorted(set(legend) - set(present))
    if absent:
        logger.info("labels %s are empty and left out of the SEG", absent)
    specs = []
    for number, label in enumerate(present, start=1):
        name = legend.get(label)
        if name is None:
            name = f"segment {label}"
            logger.info("label %d is not named in metadata['segments']; calling it %r", label, name)
        specs.append(SegmentSpec(number, label, name))
    return specs


def _fractional_segment(array: np.ndarray, legend: dict[int, str]) -> list[SegmentSpec]:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"labels.array must be numeric for a fractional SEG, got {array.dtype}")
    if len(legend) > 1:
        raise ValueError(
            "a fractional SEG holds one probability map: labels.metadata['segments'] must "
            f"name at most one segment, got {len(legend)}"
        )
    lo, hi = float(np.min(array)), float(np.max(array))
    if not (lo >= 0.0 and hi <= 1.0):  # also rejects NaN
        raise ValueError(f"a probability map must lie in [0, 1], got values in [{lo}, {hi}]")
    label, name = next(iter(legend.items()), (1, "segment 1"))
    return [SegmentSpec(1, label, name)]


def _pixels(array: np.ndarray, specs: list[SegmentSpec], fractional: bool) -> np.ndarray:
    """highdicom's input: a label map numbered 1..N, or a float stack with one segment."""
    if fractional:
        return np.asarray(array, dtype=np.float32)[..., np.newaxis]
    if array.dtype.kind == "b":
        return array.view(np.uint8)
    dtype = np.uint8 if len(specs) < 256 else np.uint16
    if array.dtype == dtype and all(s.label == s.number for s in specs):
        return array  # already numbered 1..N
    lut = np.zeros(max(s.label for s in specs) + 1, dtype=dtype)
    for s in specs:
        lut[s.label] = s.number
    mapped = np.empty(array.shape, dtype=dtype)
    for i, plane in enumerate(array):  # slice by slice: no volume-sized index temporary
        mapped[i] = lut[plane]
    return mapped


def _check_sources(labels: Volume, sources: Sequence[Dataset]) -> None:
    """Slice ``i`` of ``labels`` must lie on ``sources[i]``; raise naming the first mismatch."""
    slices, rows, columns = labels.shape
    if len(sources) != slices:
        raise ValueError(
            f"source_datasets has {len(sources)} datasets, expected one per slice of labels "
            f"({slices})"
        )
    direction = np.asarray(labels.direction, dtype=float)
    expected_iop = np.concatenate([direction[:, 0], direction[:, 1]])
    normal = direction[:, 2]
    instances = labels.source.instances if labels.source is not None else ()
    along = []
    for i, ds in enumerate(sources):
        uid = str(ds.get("SOPInstanceUID", ""))
        if instances and instances[i].sop_instance_uid != uid:
            raise ValueError(
                f"source_datasets[{i}] is instance {uid}, expected "
                f"labels.source.instances[{i}] = {instances[i].sop_instance_uid}"
            )
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ValueError(
                f"source instance {uid} is {ds.Rows}x{ds.Columns} pixels, expected the "
                f"{rows}x{columns} of labels"
            )
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        if np.abs(iop - expected_iop).max() > _ORIENTATION_TOL:
            raise ValueError(
                f"source instance {uid} has ImageOrientationPatient {iop.tolist()}, expected "
                f"labels' direction {np.round(expected_iop, 6).tolist()}"
            )
        along.append(float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal))
    origin_along = float(np.asarray(labels.origin, dtype=float) @ normal)
    if abs(along[0] - origin_along) > 0.5 * float(labels.spacing[0]):
        raise ValueError(
            f"source instance 0 lies at {along[0]:.3f} mm along the slice normal, expected "
            f"labels' origin at {origin_along:.3f} mm"
        )
    steps = np.diff(along)
    if steps.size and steps.min() <= 0:
        i = int(np.argmin(steps))
        raise ValueError(
            f"source_datasets must follow labels' slice order (increasing along the slice "
            f"normal); datasets {i} and {i + 1} lie at {along[i]:.3f} and {along[i + 1]:.3f} mm"
        )


def build_segmentation(
    labels: Volume,
    source_datasets: Sequence[Dataset],
    *,
    algorithm_name: str,
    algorithm_version: str,
    algorithm_family: str | Code = "MorphologicalOperations",
    series_number: int = 300,
    series_description: str = "Segmentation",
    fractional: bool = False,
    uid_seed: str | None = None,
) -> hd.seg.Segmentation:
    """A SEG instance for ``labels``, derived from ``source_datasets`` (headers suffice).

    Binary (default): ``labels.array`` is an integer label map; one segment per
    non-zero value present, numbered 1..N by value, named from
    ``labels.metadata["segments"]`` (``[{"label", "name"}]``) and coded by
    :func:`~clara_ray.derived.codes.segment_codes`.  Fractional: ``labels.array``
    is a probability map in [0, 1] and ``metadata["segments"]`` names at most
    one segment.  ``source_datasets[i]`` is the instance of array slice ``i``.
    ``algorithm_family`` is a CID 7162 keyword.  Given ``uid_seed``, the
    series, instance and tracking UIDs derive from it (a retried job writes
    the same UIDs).  Raises ``ValueError``/``TypeError`` naming the field.
    """
    labels = labels.to_numpy()
    array = np.asarray(labels.array)
    _check_sources(labels, source_datasets)
    legend = _legend(labels)
    specs = _fractional_segment(array, legend) if fractional else _binary_segments(array, legend)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=family_code(algorithm_family), version=algorithm_version
    )
    descriptions = []
    for spec in specs:
        coded = segment_codes(spec.name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=spec.number,
                segment_label=spec.name[:64],
                segmented_property_category=coded.category,
                segmented_property_type=coded.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=derived_uid(uid_seed, "segment", str(spec.label)),
                tracking_id=spec.name[:64],
            )
        )
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=_pixels(array, specs, fractional),
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(uid_seed, "series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(uid_seed, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=software_version(),
        device_serial_number="0",
        content_label="SEGMENTATION",
        content_description=algorithm_name[:64],
        series_description=series_description[:64],
    )
    logger.info(
        "built %s SEG %s: %d segments over %d source instances",
        "fractional" if fractional else "binary",
        seg.SOPInstanceUID,
        len(specs),
        len(source_datasets),
    )
    return seg
