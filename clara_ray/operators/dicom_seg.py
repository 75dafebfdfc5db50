"""Built-in operator: a label map (or probability map) becomes a DICOM SEG in the results."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset

from clara_ray.context import OperatorContext
from clara_ray.derived.seg import build_segmentation, software_version
from clara_ray.storage import PayloadView
from clara_ray.volume import Volume

__all__ = ["SEG_FILE", "dataset_bytes", "read_source_headers", "write_seg"]

SEG_FILE = "seg.dcm"


def read_source_headers(payload: PayloadView, volume: Volume) -> list[Dataset]:
    """The headers (no pixel data) of ``volume``'s source instances, in slice order.

    Each instance is read again from the payload by its path
    (``volume.source.instances[i].path``).  Raises ``ValueError`` when the
    volume carries no source reference or an instance has no path.
    """
    source = volume.source
    if source is None or not source.instances:
        raise ValueError(
            "input volume has no source series reference (volume.source.instances is empty); "
            "expected a volume from the series loader or on its grid"
        )
    headers: list[Dataset] = []
    for i, instance in enumerate(source.instances):
        if not instance.path:
            raise ValueError(
                f"volume.source.instances[{i}] ({instance.sop_instance_uid}) has no payload path; "
                "expected the path the series loader recorded"
            )
        with payload.open(instance.path) as fp:
            headers.append(pydicom.dcmread(fp, stop_before_pixels=True))
    return headers


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` encoded as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_seg(
    ctx: OperatorContext,
    labels: Volume,
    algorithm_name: str = "clara-ray threshold segmentation",
    algorithm_version: str | None = None,
    algorithm_family: str = "MorphologicalOperations",
    series_number: int = 300,
    series_description: str = "clara-ray segmentation",
    fractional: bool = False,
) -> dict[str, list[str]]:
    """Write a label map as a DICOM Segmentation of its source series.

    Inputs: ``labels``, a :class:`Volume` on the grid of a series of the
    payload (its ``source`` lists the instances, with their payload paths):
    an integer label map named by ``metadata["segments"]``, or with
    ``fractional`` a probability map in [0, 1].
    Outputs: ``seg_files``, a list with the storage path of the SEG file (the
    absolute path in the platform's storage that an export operator sends).
    Args: ``algorithm_name``, ``algorithm_version`` (default: the clara-ray
    version), ``algorithm_family`` (a DICOM CID 7162 keyword, e.g.
    ``ArtificialIntelligence``), ``series_number``, ``series_description``,
    ``fractional`` (a FRACTIONAL PROBABILITY SEG of one segment).
    Files: ``seg.dcm``.  Its UIDs derive from the job and operator, so a
    retry rewrites the same instance.
    """
    sources = read_source_headers(ctx.payload, labels)
    seg = build_segmentation(
        labels,
        sources,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version or software_version(),
        algorithm_family=algorithm_family,
        series_number=series_number,
        series_description=series_description,
        fractional=fractional,
        uid_seed=f"{ctx.job_id}/{ctx.operator}/seg",
    )
    path = ctx.results.write_bytes(SEG_FILE, dataset_bytes(seg))
    ctx.logger.info(
        "write_seg job=%s operator=%s: SEG %s with %d segments, %d frames",
        ctx.job_id,
        ctx.operator,
        seg.SOPInstanceUID,
        len(seg.SegmentSequence),
        int(seg.NumberOfFrames),
    )
    return {"seg_files": [path]}
