"""Sending one claimed export to its destination, and deciding what to do on failure."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clara_ray.config.dicom import DestinationConfig, DicomSettings
from clara_ray.errors import ConfigError
from clara_ray.export.manifest import result_path
from clara_ray.export.outcome import DicomSendError, describe_status, where
from clara_ray.export.policy import classify, next_delay, should_retry
from clara_ray.export.scu import overrun_seconds, send_files
from clara_ray.storage import Storage

__all__ = ["SEND_TIMEOUT_SECONDS", "ExportOutcome", "run_export"]

SEND_TIMEOUT_SECONDS = 30.0
"""Bound of the TCP connect and of each wait for an association or DIMSE message."""

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
        elif not local.is_file():
            raise FileNotFoundError(f"result {ref} is missing (expected at {local})")
        paths.append(local)
    return paths


def run_export(
    storage: Storage,
    settings: DicomSettings,
    claimed: dict[str, Any],
    client_tls: Callable[[], ssl.SSLContext],
    *,
    lease_end: float | None = None,
    timeout: float = SEND_TIMEOUT_SECONDS,
) -> ExportOutcome:
    """Send a claimed export (``Core.claim_export``'s answer); return its outcome.

    ``client_tls`` gives the client context for a destination with ``tls``
    (:class:`~clara_ray.dicom.tls.ClientTls`); it is not called otherwise.
    With ``lease_end`` (a :func:`time.monotonic` time) the send stops starting
    instances early enough to end before it (see
    :func:`~clara_ray.export.scu.overrun_seconds`); instances not sent then are
    a retryable failure.
    """
    record = claimed["export"]
    destination = DestinationConfig.model_validate(claimed["destination"])
    attempt = record.attempts
    try:
        ssl_context = client_tls() if destination.tls else None
    except ConfigError as exc:
        return {
            "ok": False,
            "reason": f"cannot send to {where(destination)} over TLS: {exc}",
            "retry_in": None,
        }
    deadline = None if lease_end is None else lease_end - overrun_seconds(timeout)
    with tempfile.TemporaryDirectory(prefix="clara-export-") as scratch:
        try:
            files = _local_files(storage, record.job_id, list(record.files), Path(scratch))
        except (OSError, ValueError) as exc:
            return {
                "ok": False,
                "reason": f"cannot read the results of job {record.job_id} to export: {exc}",
                "retry_in": None,
            }
        try:
            result = send_files(
                destination,
                files,
                calling_ae=settings.ae_title,
                ssl_context=ssl_context,
                timeout=timeout,
                deadline=deadline,
            )
        except DicomSendError as exc:
            sent = exc.result.sent if exc.result is not None else 0
            return _failure(str(exc), classify(exc), attempt, settings, sent)
    if not result.failed:
        return {"ok": True, "sent": result.sent}
    name, status = result.failed[0]
    detail = describe_status(status) if isinstance(status, int) else status
    reason = (
        f"{len(result.failed)} of {len(files)} instances not stored by {where(destination)} "
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
