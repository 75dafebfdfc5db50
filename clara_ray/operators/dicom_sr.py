"""Built-in operator: measurements become a TID 1500 DICOM SR referencing the SEG."""

from __future__ import annotations

import io
import posixpath
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from clara_ray.context import OperatorContext
from clara_ray.derived.sr import build_measurement_report
from clara_ray.operators.dicom_seg import dataset_bytes, read_source_headers
from clara_ray.storage import ResultsDir
from clara_ray.volume import Volume

__all__ = ["SR_FILE", "read_job_result", "write_sr"]

SR_FILE = "sr.dcm"


def read_job_result(results: ResultsDir, path: str) -> bytes:
    """The bytes of ``path``, a storage path under the same job's results (another operator's).

    Paths outside ``results/<job>/`` are refused: an operator reads only its
    own job's results.
    """
    job_root = posixpath.dirname(results.root.rstrip("/"))
    norm = posixpath.normpath(path)
    if not norm.startswith(job_root + "/"):
        raise ValueError(f"seg_files entry {path!r} is not under this job's results {job_root}/")
    return results.storage.read_bytes(norm)


def _read_seg(ctx: OperatorContext, seg_files: list[str]) -> Dataset:
    if not isinstance(seg_files, list | tuple) or len(seg_files) != 1:
        raise ValueError(
            f"write_sr input seg_files must list exactly one SEG file, got {seg_files!r}"
        )
    return pydicom.dcmread(io.BytesIO(read_job_result(ctx.results, seg_files[0])))


def write_sr(
    ctx: OperatorContext,
    measurements: dict[str, Any],
    seg_files: list[str],
    labels: Volume,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    series_number: int = 301,
    series_description: str = "clara-ray measurements",
) -> dict[str, list[str]]:
    """Write per-segment measurements as a Comprehensive 3D SR (TID 1500).

    Inputs: ``measurements`` (from ``measure_segments``), ``seg_files`` (from
    ``write_seg``: one storage path, read back from this job's results) and
    ``labels`` (the label map the SEG was made from: its ``source`` names the
    source instances, read again from the payload as evidence).
    Outputs: ``sr_files``, a list with the storage path of the SR file (for export).
    Args: ``algorithm_name`` and ``algorithm_version`` (default: the SEG's
    algorithm; the observer device of the report), ``series_number``,
    ``series_description``.
    Files: ``sr.dcm``.  Its UIDs derive from the job and operator.
    """
    seg = _read_seg(ctx, seg_files)
    sources = read_source_headers(ctx.payload, labels)
    sr = build_measurement_report(
        seg,
        measurements,
        sources,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        series_number=series_number,
        series_description=series_description,
        uid_seed=f"{ctx.job_id}/{ctx.operator}/sr",
    )
    path = ctx.results.write_bytes(SR_FILE, dataset_bytes(sr))
    ctx.logger.info(
        "write_sr job=%s operator=%s: SR %s referencing SEG %s",
        ctx.job_id,
        ctx.operator,
        sr.SOPInstanceUID,
        seg.SOPInstanceUID,
    )
    return {"sr_files": [path]}
