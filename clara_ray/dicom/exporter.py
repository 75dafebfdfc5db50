"""Sending one claimed export to its destination, and deciding what to do on failure."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from clara_ray.dicom.config import DestinationConfig, DicomSettings
from clara_ray.dicom.export_policy import classify, next_delay, should_retry
from clara_ray.dicom.scu import DicomSendError, describe_status, send_files
from clara_ray.export_manifest import result_path
from clara_ray.storage import Storage

__all__ = ["ExportOutcome", "run_export"]

log = logging.getLogger(__name__)

ExportOutcome = dict[str, Any]
"""Keyword arguments for ``Core.export_finished``: ok, reason, retry_in, sent."""


def _local_files(storage: Storage, job_id: str, refs: list[str], scratch: Path) -> list[Path]:
    """OS paths of the result files; copied to ``scratch`` when storage is not local."""
    paths = []
    for ref in refs:
        path = result_path(storage, job_id, ref)
        local = storage.local_path(path)
        if local is None:
            local = scratch / ref
            storage.copy_out(path, local)
        paths.append(local)
    return paths


def run_export(
    storage: Storage, settings: DicomSettings, claimed: dict[str, Any], ssl_context: Any = None
) -> ExportOutcome:
    """Send a claimed export (``Core.claim_export``'s answer); return its outcome."""
    record = claimed["export"]
    destination = DestinationConfig.model_validate(claimed["destination"])
    attempt = record.attempts
    with tempfile.TemporaryDirectory(prefix="clara-export-") as scratch:
        try:
            files = _local_files(storage, record.job_id, list(record.files), Path(scratch))
            result = send_files(
                destination,
                files,
                calling_ae=settings.ae_title,
                ssl_context=ssl_context if destination.tls else None,
            )
        except DicomSendError as exc:
            return _failure(str(exc), classify(exc), attempt, settings, 0)
        except (OSError, ValueError) as exc:
            return {
                "ok": False,
                "reason": f"cannot read the results to export: {exc}",
                "retry_in": None,
            }
    if not result.failed:
        return {"ok": True, "sent": result.sent}
    name, status = result.failed[0]
    detail = describe_status(status) if isinstance(status, int) else status
    reason = (
        f"{len(result.failed)} of {len(files)} instances not stored by {destination.name} "
        f"(first: {Path(name).name}: {detail})"
    )
    return _failure(reason, classify(result), attempt, settings, result.sent)


def _failure(
    reason: str, kind: str, attempt: int, settings: DicomSettings, sent: int
) -> ExportOutcome:
    if kind == "retry" and should_retry(attempt, settings.export):
        return {
            "ok": False,
            "reason": reason,
            "retry_in": next_delay(attempt, settings.export),
            "sent": sent,
        }
    return {
        "ok": False,
        "reason": f"{reason} (after {attempt} attempts)",
        "retry_in": None,
        "sent": sent,
    }
