"""Built-in operator: name the DICOM results of a job and where they go.

:func:`export_dicom` sends nothing: it writes the export manifest that
:func:`clara_ray.export.request.build_manifest` checks and builds; after the
job ends, the DICOM adapter sends the files it names (the whole journey is told
in :mod:`clara_ray.export`).
"""

from __future__ import annotations

import posixpath
from typing import Any

from clara_ray.context import OperatorContext
from clara_ray.export.manifest import MANIFEST_NAME
from clara_ray.export.request import build_manifest

__all__ = ["export_dicom"]


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
    manifest = build_manifest(ctx.results.storage, ctx.job_id, destinations, inputs)
    ctx.results.write_text(MANIFEST_NAME, manifest.to_json())
    ctx.logger.info(
        "export manifest of job %s: %d DICOM files to %s (%s)",
        ctx.job_id,
        len(manifest.files),
        ", ".join(manifest.destinations),
        posixpath.join(ctx.operator, MANIFEST_NAME),
    )
    return {}
