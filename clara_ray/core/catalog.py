"""What jobs are made of: the pipelines and the payloads the Core knows.

Parts of :class:`~clara_ray.core.service.CoreService` (its :attr:`pipelines` and
:attr:`payloads`), called under the Core's lock.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from clara_ray.contracts.records import JobState, PayloadRecord, PipelineRecord
from clara_ray.core.store import Store
from clara_ray.errors import ConflictError, NotFoundError
from clara_ray.pipeline import parse_pipeline
from clara_ray.storage import Storage

__all__ = ["PayloadCatalog", "PipelineCatalog"]

log = logging.getLogger(__name__)


class PipelineCatalog:
    """The pipelines by name, each with its version; the Core's pipeline verbs."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self._clock = clock

    def create_pipeline(self, definition: str, source: str = "<api>") -> PipelineRecord:
        """Validate and store a pipeline; same name replaces it (version + 1).

        Operator imports are checked by the client that submits the file (its
        environment, e.g. a ``ray job submit`` working dir, is where they must
        import), not here.
        """
        spec = parse_pipeline(definition, source=source, check_imports=False)
        now = self._clock()
        existing = self.store.get_pipeline(spec.name)
        if existing and existing.definition == definition:
            return existing
        rec = PipelineRecord(
            name=spec.name,
            pipeline_id=existing.pipeline_id if existing else uuid.uuid4().hex,
            definition=definition,
            source=source,
            version=existing.version + 1 if existing else 1,
            created_at=existing.created_at if existing else now,
            updated_at=now,
            description=spec.description,
        )
        self.store.put_pipeline(rec)
        log.info("pipeline %s stored (version %d)", rec.name, rec.version)
        return rec

    def get_pipeline(self, name: str) -> PipelineRecord:
        rec = self.store.get_pipeline(name)
        if rec is None:
            raise NotFoundError(
                f"pipeline '{name}' does not exist (see `clara-ray list pipelines`)"
            )
        return rec

    def list_pipelines(self) -> list[PipelineRecord]:
        return self.store.list_pipelines()

    def delete_pipeline(self, name: str) -> bool:
        rec = self.get_pipeline(name)
        return self.store.delete_pipeline(rec.name)


class PayloadCatalog:
    """The sealed payloads, by id or name; the Core's payload verbs."""

    def __init__(self, store: Store, storage: Storage, clock: Callable[[], float]) -> None:
        self.store = store
        self.storage = storage
        self._clock = clock

    def register_payload(
        self,
        payload_id: str,
        *,
        name: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> PayloadRecord:
        """Seal an uploaded payload and record it; a named payload is a reusable dataset."""
        existing = self.store.get_payload(payload_id)
        if existing:
            return existing
        if name and (other := self.store.find_payload_by_name(name)):
            raise ConflictError(f"a payload named '{name}' already exists ({other.payload_id})")
        manifest = self.storage.seal_payload(payload_id)
        if not manifest.files:
            raise NotFoundError(
                f"payload {payload_id} has no files; upload them before registering it"
            )
        rec = PayloadRecord(
            payload_id=payload_id,
            files=len(manifest.files),
            bytes=manifest.total_bytes,
            created_at=self._clock(),
            name=name,
            source=source,
            metadata=dict(metadata or {}),
        )
        self.store.put_payload(rec)
        log.info("payload %s sealed: %d files, %d bytes", payload_id, rec.files, rec.bytes)
        return rec

    def get_payload(self, ref: str) -> PayloadRecord:
        rec = self.store.get_payload(ref) or self.store.find_payload_by_name(ref)
        if rec is None:
            raise NotFoundError(f"payload '{ref}' does not exist (see `clara-ray list payloads`)")
        return rec

    def list_payloads(self) -> list[PayloadRecord]:
        return self.store.list_payloads()

    def delete_payload(self, ref: str) -> bool:
        rec = self.get_payload(ref)
        active = [
            j.job_id
            for j in self.store.list_jobs()
            if j.payload_id == rec.payload_id and j.state is not JobState.STOPPED
        ]
        if active:
            raise ConflictError(
                f"payload {rec.payload_id} is used by unfinished jobs: {', '.join(active)}"
            )
        self.storage.delete_payload(rec.payload_id)
        return self.store.delete_payload(rec.payload_id)
