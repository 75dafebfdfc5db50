"""Built-in operator: name the DICOM results of a job and where they go.

:func:`export_dicom` sends nothing.  It checks that every file its inputs name
is a DICOM file in the job's results and writes the manifest
(:data:`~clara_ray.export_manifest.MANIFEST_NAME`, format in
:mod:`clara_ray.export_manifest`) into its results folder; after the job
ends, the DICOM adapter finds the manifest and sends the files (C-STORE) to
each destination.  A mis-wired pipeline therefore fails inside the job, with
the missing file's name, rather than later in the adapter.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from clara_ray.context import OperatorContext
from clara_ray.errors import OperatorError
from clara_ray.export_manifest import (
    MANIFEST_NAME,
    ExportManifest,
    ExportManifestError,
    check_result_ref,
    result_path,
    split_destinations,
)
from clara_ray.storage import Storage

__all__ = ["export_dicom"]

_DICOM_MAGIC_END = 132  # 128-byte preamble, then b"DICM"


def _refs(input_name: str, value: Any, job_root: str) -> list[str]:
    """The result paths an input names (a string or a list of strings)."""
    values: Sequence[Any]
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = value
    else:
        raise TypeError(
            f"export input '{input_name}' must be a result path or a list of them, "
            f"got {type(value).__name__}"
        )
    refs = []
    for v in values:
        if not isinstance(v, str):
            raise TypeError(
                f"export input '{input_name}' must hold result paths (strings), "
                f"got an item of type {type(v).__name__}"
            )
        # A storage path as ResultsDir.write_bytes returns it is accepted too.
        ref = v[len(job_root) + 1 :] if v.startswith(job_root + "/") else v
        try:
            refs.append(check_result_ref(ref))
        except ExportManifestError as exc:
            raise OperatorError(f"export input '{input_name}': {exc}") from exc
    return refs


def _is_dicom(storage: Storage, path: str) -> bool:
    with storage.fs.open_input_stream(path) as f:
        head: bytes = f.read(_DICOM_MAGIC_END)
    return head[128:_DICOM_MAGIC_END] == b"DICM"


def export_dicom(
    ctx: OperatorContext, destinations: str | list[str] = "PACS", **inputs: Any
) -> dict[str, Any]:
    """Name the DICOM results to send and their destinations; sends nothing itself.

    Args:
        destinations: destination names configured in the DICOM adapter, as a
            list or a comma-separated string (``"PACS, RESEARCH"``); ``"none"``
            turns the export off (no manifest is written).

    Inputs (any names, e.g. ``files``, ``seg_files``, ``sr_files``): each a
    result path ``"<operator>/<name>"`` relative to the job's results root, or
    a list of them, as upstream writers return them (a storage path under the
    job's results root is accepted too).  Every file must exist in the job's
    results and be a DICOM file (preamble and ``DICM``); a file named twice is
    exported once.

    Outputs: none.  Files: ``export.json``, the export manifest.

    Raises:
        OperatorError: a named file is missing or not DICOM, a path is not of
            the form ``"<operator>/<name>"``, or no file is named at all.
        ExportManifestError: a destination name is invalid or none is given.
        TypeError: an input is neither a string nor a list of strings.
    """
    if isinstance(destinations, str) and destinations.strip().lower() == "none":
        ctx.logger.info("export off for job %s (destinations: none)", ctx.job_id)
        return {}
    names = split_destinations(destinations)
    storage = ctx.results.storage
    job_root = storage.results_root(ctx.job_id)
    refs: list[str] = []
    for input_name in sorted(inputs):
        refs += _refs(input_name, inputs[input_name], job_root)
    refs = list(dict.fromkeys(refs))
    if not refs:
        raise OperatorError(
            f"export of job {ctx.job_id} names no file: its inputs {sorted(inputs)} are empty"
        )
    existing = {entry.path for entry in storage.list_results(ctx.job_id)}
    missing = [ref for ref in refs if ref not in existing]
    if missing:
        raise OperatorError(
            f"export of job {ctx.job_id}: result file(s) {missing} do not exist in the job's "
            f"results (under {job_root})"
        )
    not_dicom = [
        ref for ref in refs if not _is_dicom(storage, result_path(storage, ctx.job_id, ref))
    ]
    if not_dicom:
        raise OperatorError(
            f"export of job {ctx.job_id}: result file(s) {not_dicom} are not DICOM files "
            "(no 'DICM' after the 128-byte preamble)"
        )
    manifest = ExportManifest(destinations=names, files=tuple(refs))
    ctx.results.write_text(MANIFEST_NAME, manifest.to_json())
    ctx.logger.info(
        "export manifest of job %s: %d DICOM files to %s (%s)",
        ctx.job_id,
        len(refs),
        ", ".join(names),
        posixpath.join(ctx.operator, MANIFEST_NAME),
    )
    return {}
