"""Closing quiet groups of received instances into payloads and jobs.

A group (one study or series sent to one Clara AE title) closes when no
association that stored into it is still open and nothing has happened to it
for the AE title's ``timeout`` (no instance stored, no association let go of
it, no instance of the AE title arriving on an association not yet bound to a
group; see :mod:`clara_ray.dicom.spool`): its spool folder is
renamed into ``closing/`` (atomically), uploaded as a sealed payload and one
job per pipeline of the AE title is created and started.  Every step is
idempotent (the payload id and job ids derive from the closing folder's name),
so a crash at any point is repaired by running the same steps again after a
restart, and no job is ever created twice.
"""

from __future__ import annotations

import logging
import time
import uuid

from clara_ray.config.dicom import AeTitleConfig, DicomConfig
from clara_ray.contracts.core_client import CoreClient
from clara_ray.dicom.spool import ClosingGroup, Spool
from clara_ray.errors import ClaraError
from clara_ray.storage import Storage

__all__ = ["GroupCloser", "job_id_for", "payload_id_for"]

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("0b7c2a52-7c1e-4b0e-8a55-5bd0c3f0b8e1")
_DEFAULT_TIMEOUT = 5.0


def payload_id_for(closing: ClosingGroup) -> str:
    return uuid.uuid5(_NAMESPACE, f"payload/{closing.called_ae}/{closing.key}").hex


def job_id_for(payload_id: str, pipeline: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"job/{payload_id}/{pipeline}").hex


class GroupCloser:
    def __init__(self, spool: Spool, storage: Storage, core: CoreClient) -> None:
        self.spool = spool
        self.storage = storage
        self.core = core

    def tick(self, config: DicomConfig, now: float | None = None) -> list[str]:
        """Close the groups that went quiet and ingest every closing group; returns job ids."""
        now = time.time() if now is None else now
        for group in self.spool.open_groups():
            ae = config.aetitle(group.called_ae)
            timeout = ae.timeout if ae else _DEFAULT_TIMEOUT
            if not group.held and now - group.last_activity >= timeout:
                self.spool.close_group(group, now)
        jobs: list[str] = []
        for closing in self.spool.closing_groups():
            jobs += self.ingest(closing, config.aetitle(closing.called_ae))
        return jobs

    def ingest(self, closing: ClosingGroup, ae: AeTitleConfig | None) -> list[str]:
        files = self.spool.files(closing.path)
        if not files:
            self.spool.remove(closing)
            return []
        payload_id = payload_id_for(closing)
        if not self.storage.is_sealed(payload_id):
            self.storage.upload_payload(payload_id, closing.path, files=files, link=True)
        self.core.register_payload(
            payload_id,
            source=f"dicom:{closing.called_ae}",
            metadata={
                "called_ae": closing.called_ae,
                "grouping": closing.grouping,
                "group_uid": closing.group_uid,
                "instances": len(files),
            },
        )
        jobs = []
        if ae is None:
            log.error(
                "AE title %s is no longer configured: payload %s kept without jobs; "
                "start one with `clara-ray create job -f %s`",
                closing.called_ae,
                payload_id,
                payload_id,
            )
        else:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(closing.closed_at))
            for pipeline in ae.pipelines:
                job_id = job_id_for(payload_id, pipeline)
                try:
                    self.core.create_job(
                        job_id,
                        pipeline,
                        payload_id,
                        name=f"{ae.ae_title}-{pipeline}-{stamp}",
                        priority=ae.priority,
                        metadata={"called_ae": ae.ae_title, "group_uid": closing.group_uid},
                    )
                    self.core.start_job(job_id)
                except ClaraError as exc:
                    log.error(
                        "AE title %s: no job of pipeline '%s' on payload %s: %s",
                        ae.ae_title,
                        pipeline,
                        payload_id,
                        exc,
                    )
                    continue
                jobs.append(job_id)
        log.info(
            "group %s of %s closed: %d instances -> payload %s, %d jobs",
            closing.key,
            closing.called_ae,
            len(files),
            payload_id,
            len(jobs),
        )
        self.spool.remove(closing)
        return jobs
