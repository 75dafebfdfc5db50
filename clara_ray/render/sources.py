"""Where a job's volumes come from: its payload's image series and its label-map results.

A job shows every positioned image series of its payload (``series-1``,
``series-2``, ... in the payload's file order, found by their headers), then
every label map in its results, named ``<operator>.<file stem>`` (e.g.
``label-map.labels``): NRRD label maps, with the segment names of the legend
written beside them, and DICOM SEGs, with their segment descriptions.  An NRRD
label map overlays the image series whose grid it shares (same shape, origin
and axes within a tenth of a voxel); a SEG overlays the series whose instances
it references, read onto that series' grid (:func:`load_volume` given the image).
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from clara_ray.errors import NotFoundError
from clara_ray.operators.nrrd import read_nrrd
from clara_ray.operators.series_loader import read_series
from clara_ray.operators.series_selector import SeriesCandidate, scan_series
from clara_ray.render.seg_source import (
    instance_uids,
    read_seg_header,
    seg_labels_on,
    seg_references,
    seg_segments,
)
from clara_ray.storage import Storage
from clara_ray.volume import Volume

__all__ = [
    "Segment",
    "VolumeSource",
    "find_volumes",
    "label_map_volume",
    "load_volume",
    "references_image",
    "same_grid",
]


@dataclass(frozen=True)
class Segment:
    value: int
    name: str


@dataclass(frozen=True)
class VolumeSource:
    """One volume a job can show, before its voxels are read."""

    name: str
    kind: str  # "image" or "labels"
    format: str  # "dicom" (an image series), "nrrd" or "seg" (a label map)
    description: str
    files: tuple[str, ...]  # payload file names (image) or the label map's results path
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    references: frozenset[str] = frozenset()  # a SEG's source SOP Instance UIDs

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.name,
            "kind": self.kind,
            "description": self.description,
            "segments": [{"value": s.value, "name": s.name} for s in self.segments],
        }


def _series_name(index: int) -> str:
    return f"series-{index}"


def _describe(candidate: SeriesCandidate) -> str:
    header = candidate.header
    parts = [str(header.get("Modality") or "image")]
    if header.get("SeriesNumber") is not None:
        parts.append(f"#{header.SeriesNumber}")
    if header.get("SeriesDescription"):
        parts.append(str(header.SeriesDescription))
    return f"{' '.join(parts)} ({len(candidate.files)} images)"


def _legend(storage: Storage, nrrd_path: str) -> tuple[Segment, ...]:
    legend_path = nrrd_path.removesuffix(".nrrd") + ".json"
    try:
        legend = json.loads(storage.read_bytes(legend_path))
    except (NotFoundError, ValueError):
        return ()
    return tuple(
        Segment(int(s["label"]), str(s.get("name") or f"segment {s['label']}"))
        for s in legend.get("segments", [])
    )


def find_volumes(storage: Storage, job_id: str, payload_id: str) -> list[VolumeSource]:
    """The image series of the job's payload, then the label maps in its results."""
    sources: list[VolumeSource] = []
    if storage.is_sealed(payload_id):
        payload = storage.payload_view(payload_id)
        for index, candidate in enumerate(scan_series(payload.iter_files()), start=1):
            sources.append(
                VolumeSource(
                    _series_name(index), "image", "dicom", _describe(candidate), candidate.files
                )
            )
    root = storage.results_root(job_id)
    for entry in storage.list_results(job_id):
        if "/" not in entry.path or entry.path.endswith(".json"):
            continue
        operator, file = entry.path.split("/", 1)
        path = posixpath.join(root, entry.path)
        if entry.path.endswith(".nrrd"):
            stem = posixpath.basename(file).removesuffix(".nrrd")
            sources.append(
                VolumeSource(
                    f"{operator}.{stem}",
                    "labels",
                    "nrrd",
                    f"label map {entry.path}",
                    (path,),
                    _legend(storage, path),
                )
            )
            continue
        header = read_seg_header(storage, path)
        if header is not None:
            sources.append(
                VolumeSource(
                    f"{operator}.{posixpath.splitext(posixpath.basename(file))[0]}",
                    "labels",
                    "seg",
                    f"segmentation {entry.path}",
                    (path,),
                    tuple(Segment(number, label) for number, label in seg_segments(header)),
                    seg_references(header),
                )
            )
    return sources


def label_map_volume(array: np.ndarray, header: dict[str, Any]) -> Volume:
    """A label map read by :func:`~clara_ray.operators.nrrd.read_nrrd` as a :class:`Volume`."""
    # NRRD axes are (column, row, slice); a Volume's direction columns are too.
    steps = np.asarray(header["space directions"], dtype=float)
    spacing = np.linalg.norm(steps, axis=1)
    columns = (steps / spacing[:, None]).T
    origin = np.asarray(header["space origin"], dtype=float)
    return Volume(
        array=array,
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple((float(r[0]), float(r[1]), float(r[2])) for r in columns),
    )


def _payload_files(
    storage: Storage, payload_id: str, names: Iterable[str]
) -> Iterable[tuple[str, IO[bytes]]]:
    payload = storage.payload_view(payload_id)
    for name in names:
        with payload.open(name) as fp:
            yield name, fp


def load_volume(
    storage: Storage, payload_id: str, source: VolumeSource, image: Volume | None = None
) -> Volume:
    """The voxels of ``source``: a series read from the payload, a label map's NRRD, or
    a SEG read onto ``image``'s grid (``ValueError`` without an image it references)."""
    if source.format == "seg":
        if image is None:
            raise ValueError(
                f"volume {source.name} is a DICOM SEG: it is read onto a series it references"
            )
        return seg_labels_on(storage.read_bytes(source.files[0]), source.name, image)
    if source.format == "nrrd":
        # pynrrd reads the header line by line, which pyarrow's streams cannot
        array, header = read_nrrd(io.BytesIO(storage.read_bytes(source.files[0])))
        return label_map_volume(array, header)
    volumes = read_series(_payload_files(storage, payload_id, source.files))
    if not volumes:
        raise NotFoundError(f"volume {source.name} holds no image slices that can be read")
    return max(volumes, key=lambda v: v.shape[0])


def references_image(source: VolumeSource, image: Volume) -> bool:
    """Whether the SEG ``source`` references any of ``image``'s instances."""
    return not source.references.isdisjoint(instance_uids(image))


def same_grid(image: Volume, labels: Volume) -> bool:
    """Whether ``labels`` lies voxel for voxel on ``image``'s grid."""
    if image.shape != labels.shape:
        return False
    tolerance = 0.1 * min(image.spacing)
    corner = np.array([s - 1 for s in image.shape], dtype=float)
    ends = [v.affine() @ np.append(corner, 1.0) for v in (image, labels)]
    starts = [np.asarray(v.origin, dtype=float) for v in (image, labels)]
    return bool(
        np.allclose(starts[0], starts[1], atol=tolerance)
        and np.allclose(ends[0], ends[1], atol=tolerance)
    )
