"""The operator side of an export: from an operator's inputs to a checked manifest.

:func:`build_manifest` is what the ``export_dicom`` operator
(:mod:`clara_ray.operators.export`) runs inside the job: every file its inputs
name must be a DICOM file in the job's results, so a mis-wired pipeline fails
inside the job, with the missing file's name, rather than later in the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clara_ray.errors import ExportManifestError, OperatorError
from clara_ray.export.manifest import (
    ExportManifest,
    check_result_ref,
    result_path,
    split_destinations,
)
from clara_ray.storage import Storage

__all__ = ["build_manifest"]

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


def build_manifest(
    storage: Storage,
    job_id: str,
    destinations: str | Sequence[str],
    inputs: Mapping[str, Any],
) -> ExportManifest:
    """The manifest sending the DICOM files ``inputs`` name to ``destinations``.

    Each input is a result path ``"<operator>/<name>"`` or a list of them (a
    storage path under the job's results root is accepted too); a file named
    twice is exported once.

    Raises:
        OperatorError: a named file is missing or not DICOM, a path is not of
            the form ``"<operator>/<name>"``, or no file is named at all.
        ExportManifestError: a destination name is invalid or none is given.
        TypeError: an input is neither a string nor a list of strings.
    """
    names = split_destinations(destinations)
    job_root = storage.results_root(job_id)
    refs: list[str] = []
    for input_name in sorted(inputs):
        refs += _refs(input_name, inputs[input_name], job_root)
    refs = list(dict.fromkeys(refs))
    if not refs:
        raise OperatorError(
            f"export of job {job_id} names no file: its inputs {sorted(inputs)} are empty"
        )
    existing = {entry.path for entry in storage.list_results(job_id)}
    missing = [ref for ref in refs if ref not in existing]
    if missing:
        raise OperatorError(
            f"export of job {job_id}: result file(s) {missing} do not exist in the job's "
            f"results (under {job_root})"
        )
    not_dicom = [ref for ref in refs if not _is_dicom(storage, result_path(storage, job_id, ref))]
    if not_dicom:
        raise OperatorError(
            f"export of job {job_id}: result file(s) {not_dicom} are not DICOM files "
            "(no 'DICM' after the 128-byte preamble)"
        )
    return ExportManifest(destinations=names, files=tuple(refs))
