"""DICOM Segmentation results: found by their headers, read onto the image series they segment.

A SEG's frames are each derived from one source instance, so its label map on
an image series comes from the series' own instances, in the volume's slice
order: slice ``i`` of the result is the combined segmentation of
``image.source.instances[i]`` (segment numbers, 0 where no segment is, and 0
on the slices whose instance the SEG does not cover).
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import SegmentationStorage

from clara_ray.storage import Storage
from clara_ray.volume import Volume

__all__ = ["instance_uids", "read_seg_header", "seg_labels_on", "seg_references", "seg_segments"]


def read_seg_header(storage: Storage, path: str) -> Dataset | None:
    """The header of the DICOM SEG at ``path`` (its pixels left unread); None for any other file."""
    with storage.fs.open_input_file(path) as fp:
        try:
            header = pydicom.dcmread(fp, stop_before_pixels=True)
        except (InvalidDicomError, EOFError):
            return None
    sop_class = header.file_meta.get("MediaStorageSOPClassUID") or header.get("SOPClassUID")
    return header if sop_class == SegmentationStorage else None


def seg_segments(header: Dataset) -> list[tuple[int, str]]:
    """The SEG's segments as (segment number, label)."""
    return [
        (int(item.SegmentNumber), str(item.get("SegmentLabel") or f"segment {item.SegmentNumber}"))
        for item in header.get("SegmentSequence", [])
    ]


def seg_references(header: Dataset) -> frozenset[str]:
    """The SOP Instance UIDs of the source instances the SEG references."""
    return frozenset(
        str(instance.ReferencedSOPInstanceUID)
        for series in header.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedInstanceSequence", [])
    )


def instance_uids(image: Volume) -> list[str]:
    """The SOP Instance UIDs of ``image``'s slices, in slice order (none when unknown)."""
    if image.source is None:
        return []
    return [instance.sop_instance_uid for instance in image.source.instances]


def seg_labels_on(data: bytes, name: str, image: Volume) -> Volume:
    """The SEG encoded in ``data`` as a label map on ``image``'s grid.

    Raises ``ValueError`` when the SEG references none of ``image``'s instances
    or its frames are not the size of the image's slices.
    """
    seg = hd.seg.segread(io.BytesIO(data))
    uids = instance_uids(image)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if referenced.isdisjoint(uids):
        raise ValueError(f"{name} references none of the instances of the image")
    frame = (int(seg.Rows), int(seg.Columns))
    if frame != image.shape[1:]:
        raise ValueError(
            f"{name} has {frame[0]}x{frame[1]} frames, expected the image's "
            f"{image.shape[1]}x{image.shape[2]} slices"
        )
    dtype = np.uint8 if max(seg.segment_numbers, default=0) < 256 else np.uint16
    array = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        combine_segments=True,
        assert_missing_frames_are_empty=True,
        dtype=dtype,
    )
    return Volume(array, image.spacing, image.origin, image.direction)
