"""The export ledger: one record per result set and destination, kept by the Core.

When a job ends Healthy, each export manifest it wrote (see
:mod:`clara_ray.export.manifest`) becomes one record per destination.  The
DICOM adapter claims a Pending record (with a lease, so a record claimed by an
adapter that died is claimed again), sends it, and reports the outcome; a
failed attempt goes back to Pending with a later ``next_attempt_at`` until the
attempts run out.  A Failed export can be sent again (:meth:`resend_export`).

The Core records them (:meth:`ExportLedger.record_job_exports`) in the same
unit of work that stops the job Healthy and marks it ``exports_created``: a
Healthy job either has its exports recorded or, if it was stopped by an older
version that lost them, is found by ``CoreService.recover`` and gets them then.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from clara_ray.config.dicom import DicomConfig
from clara_ray.contracts.records import ExportRecord, ExportState
from clara_ray.errors import ClaraError, ConflictError, NotFoundError
from clara_ray.export.manifest import find_manifests
from clara_ray.storage import Storage

__all__ = ["ExportLedger", "ExportStore"]

log = logging.getLogger(__name__)
_EXPORT_NAMESPACE = uuid.UUID("6f1f8f3e-2b7a-4c55-9d53-3c0f7f2b8a10")


class ExportStore(Protocol):
    """Where the ledger keeps its records (the Core's state database)."""

    def put_export(self, rec: ExportRecord) -> None: ...
    def get_export(self, export_id: str) -> ExportRecord | None: ...
    def list_exports(
        self, job_id: str | None = None, states: tuple[str, ...] | None = None
    ) -> list[ExportRecord]: ...


class ExportLedger:
    """The exports of every job and their state; the Core's export verbs.

    Args:
        store: the records' home.
        storage: where the jobs' results (and their manifests) are.
        dicom_config: the destinations configured now (asked at each claim, so a
            destination created or deleted at run time counts at once).
        clock: wall-clock time in seconds.
    """

    def __init__(
        self,
        store: ExportStore,
        storage: Storage,
        dicom_config: Callable[[], DicomConfig],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.storage = storage
        self._dicom_config = dicom_config
        self._clock = clock

    def record_job_exports(self, job_id: str) -> list[ExportRecord]:
        """Record one export per manifest and destination of a Healthy job.

        Run inside the unit of work that records the job's Healthy stop (or the one
        that repairs a job stopped without exports).  Manifests that cannot be read
        (a ClaraError) leave one Failed record saying why.  Any other error (storage
        unreachable, an S3 listing that failed) propagates: the unit of work rolls
        back, and the transition is made again when the report is retried.
        """
        now = self._clock()
        destinations = {d.name for d in self._dicom_config().destinations}
        created = []
        try:
            manifests = find_manifests(self.storage, job_id)
        except ClaraError as exc:
            manifests = []
            rec = ExportRecord(
                export_id=uuid.uuid5(_EXPORT_NAMESPACE, f"{job_id}/manifest").hex,
                job_id=job_id,
                operator="-",
                destination="-",
                files=[],
                state=ExportState.FAILED,
                reason=f"export manifest unreadable: {exc}",
                created_at=now,
                updated_at=now,
            )
            self.store.put_export(rec)
            created.append(rec)
        for operator, manifest in manifests:
            for destination in manifest.destinations:
                export_id = uuid.uuid5(_EXPORT_NAMESPACE, f"{job_id}/{operator}/{destination}").hex
                if self.store.get_export(export_id) is not None:
                    continue
                rec = ExportRecord(
                    export_id=export_id,
                    job_id=job_id,
                    operator=operator,
                    destination=destination,
                    files=list(manifest.files),
                    created_at=now,
                    updated_at=now,
                    next_attempt_at=now,
                )
                if destination not in destinations:
                    rec.state = ExportState.FAILED
                    known = ", ".join(sorted(destinations)) or "none configured"
                    rec.reason = (
                        f"unknown destination '{destination}' (destinations: {known}); add it with "
                        "`clara-ray dicom create destination`"
                    )
                self.store.put_export(rec)
                created.append(rec)
                log.info(
                    "job %s: export %s to %s (%d files) %s",
                    job_id,
                    export_id,
                    destination,
                    len(rec.files),
                    rec.state,
                )
        return created

    def claim_export(
        self,
        worker: str,
        lease_seconds: float = 120.0,
        claim_id: str | None = None,
        destination: str | None = None,
    ) -> dict[str, Any] | None:
        """The next export due (Pending and due, or InProgress with an expired lease),
        marked InProgress for ``lease_seconds``, with its destination's configuration;
        with ``destination``, only an export to that destination.

        ``claim_id``, chosen by the caller once per claim, makes a retried call (Ray
        retries calls to a restarted Core) answer the export it claimed the first time
        instead of handing out a second one.
        """
        now = self._clock()
        if claim_id is not None:
            for rec in self.store.list_exports(states=(str(ExportState.IN_PROGRESS),)):
                if rec.details.get("claim") != claim_id:
                    continue
                target = self._dicom_config().destination(rec.destination)
                if target is not None:
                    return {"export": rec, "destination": target.model_dump()}
        for rec in self.store.list_exports(
            states=(str(ExportState.PENDING), str(ExportState.IN_PROGRESS))
        ):
            due = (rec.state is ExportState.PENDING and rec.next_attempt_at <= now) or (
                rec.state is ExportState.IN_PROGRESS and (rec.lease_until or 0) < now
            )
            if not due or (destination is not None and rec.destination != destination):
                continue
            target = self._dicom_config().destination(rec.destination)
            if target is None:
                self._finish(
                    rec, ExportState.FAILED, f"destination '{rec.destination}' was deleted"
                )
                continue
            rec.state, rec.attempts = ExportState.IN_PROGRESS, rec.attempts + 1
            rec.lease_until, rec.updated_at = now + lease_seconds, now
            rec.details = {**rec.details, "worker": worker, "claim": claim_id}
            self.store.put_export(rec)
            return {"export": rec, "destination": target.model_dump()}
        return None

    def export_finished(
        self,
        export_id: str,
        *,
        ok: bool,
        reason: str | None = None,
        retry_in: float | None = None,
        sent: int = 0,
    ) -> ExportRecord:
        """Record an attempt's outcome: Succeeded, Pending again after ``retry_in`` s, or Failed."""
        rec = self.get_export(export_id)
        if rec.state in (ExportState.SUCCEEDED, ExportState.FAILED):
            return rec
        rec.sent = max(rec.sent, sent)
        if ok:
            return self._finish(rec, ExportState.SUCCEEDED, None)
        if retry_in is not None:
            now = self._clock()
            rec.state, rec.reason = ExportState.PENDING, reason
            rec.next_attempt_at, rec.lease_until, rec.updated_at = now + retry_in, None, now
            self.store.put_export(rec)
            log.info(
                "export %s attempt %d failed, retry in %.1f s: %s",
                export_id,
                rec.attempts,
                retry_in,
                reason,
            )
            return rec
        return self._finish(rec, ExportState.FAILED, reason)

    def _finish(self, rec: ExportRecord, state: ExportState, reason: str | None) -> ExportRecord:
        rec.state, rec.reason, rec.lease_until, rec.updated_at = state, reason, None, self._clock()
        self.store.put_export(rec)
        log.info(
            "export %s to %s: %s%s",
            rec.export_id,
            rec.destination,
            state,
            f" ({reason})" if reason else "",
        )
        return rec

    def resend_export(self, export_id: str) -> ExportRecord:
        """Send a Failed export again: Pending and due now, attempts counted from zero.

        ``export_id`` may be a unique prefix (as `clara-ray list exports` shows it).
        """
        rec = self._find_export(export_id)
        if rec.state is not ExportState.FAILED:
            raise ConflictError(
                f"export {rec.export_id} is {rec.state}; only a Failed export can be resent"
            )
        if rec.operator == "-":
            raise ConflictError(
                f"export {rec.export_id} has nothing to send: job {rec.job_id}'s export "
                f"manifests could not be read ({rec.reason}); run the pipeline again as a new job"
            )
        now = self._clock()
        rec.state, rec.attempts, rec.reason, rec.sent = ExportState.PENDING, 0, None, 0
        rec.next_attempt_at, rec.lease_until, rec.updated_at = now, None, now
        self.store.put_export(rec)
        log.info("export %s to %s: resent", rec.export_id, rec.destination)
        return rec

    def _find_export(self, ref: str) -> ExportRecord:
        rec = self.store.get_export(ref)
        if rec is not None:
            return rec
        matches = [e for e in self.store.list_exports() if ref and e.export_id.startswith(ref)]
        if len(matches) > 1:
            raise ConflictError(
                f"export id prefix '{ref}' matches {len(matches)} exports; give more characters"
            )
        if not matches:
            return self.get_export(ref)
        return matches[0]

    def get_export(self, export_id: str) -> ExportRecord:
        rec = self.store.get_export(export_id)
        if rec is None:
            raise NotFoundError(
                f"export '{export_id}' does not exist (see `clara-ray list exports`)"
            )
        return rec

    def list_exports(
        self, job_id: str | None = None, state: str | None = None
    ) -> list[ExportRecord]:
        states = (str(ExportState.parse(state, "export state")),) if state else None
        return self.store.list_exports(job_id=job_id, states=states)
