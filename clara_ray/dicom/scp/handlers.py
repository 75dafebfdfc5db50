"""The Storage SCP's C-ECHO and C-STORE handlers: peek, filter, store into the spool.

The C-STORE handler never decodes the data set: it peeks at the encoded bytes
of its spool temp file, checks the AE title's SOP class filters, and returns
Success only after :meth:`Spool.store_temp` named the file in its group (with
durability ``instance``, through one of the association's slots: one fsync,
see :mod:`clara_ray.dicom.spool.slots`).
"""

from __future__ import annotations

import errno
import logging
import mmap
import threading
from collections.abc import Callable
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from clara_ray.config.dicom import AeTitleConfig, DicomSettings
from clara_ray.dicom.part10 import file_preamble_and_meta, printable
from clara_ray.dicom.peek import DatasetTooLargeError, MalformedDatasetError, peek
from clara_ray.dicom.policy import StoreStatus
from clara_ray.dicom.receive import StreamedDataset
from clara_ray.dicom.scp.association import AssociationRecord, ScpAssociation
from clara_ray.dicom.spool import Spool, TempFile

__all__ = ["StoreHandler"]

log = logging.getLogger("clara_ray.dicom.scp")  # one logger for the whole receiver

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class StoreHandler:
    """The DIMSE handlers of one :class:`StorageScp`; counts into its stats under its lock.

    ``on_stored(called_ae, group_uid)`` is called after each newly stored instance.
    """

    def __init__(
        self,
        settings: DicomSettings,
        spool: Spool,
        max_instance: int,
        on_stored: Callable[[str, str], None] | None,
        lock: threading.Lock,
        stats: dict[str, int],
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.max_instance = max_instance
        self._on_stored = on_stored
        self._lock = lock
        self._stats = stats

    def handle_echo(self, event: evt.Event) -> int:
        assoc = event.assoc
        if isinstance(assoc, ScpAssociation):
            assoc.record.echoes += 1
        with self._lock:
            self._stats["echoes"] += 1
        return int(StoreStatus.Success)

    def handle_store(self, event: evt.Event) -> int | Dataset:
        assoc = event.assoc
        record = assoc.record if isinstance(assoc, ScpAssociation) else None
        try:
            status, comment, stored, size = self._store(event, record)
        except Exception:  # a handler error is a failure status, never a dead listener
            log.exception("C-STORE from %s failed unexpectedly", record.calling if record else "?")
            status, comment, stored, size = (
                StoreStatus.ProcessingFailure,
                "internal error",
                False,
                0,
            )
        with self._lock:
            if status == StoreStatus.Success:
                self._stats["instances" if stored else "duplicates"] += 1
                self._stats["bytes"] += size
            else:
                self._stats["failures"] += 1
        if record is not None:
            if status == StoreStatus.Success:
                if stored:
                    record.instances += 1
                else:
                    record.duplicates += 1
                record.bytes += size
            else:
                record.failures += 1
        if status == StoreStatus.Success:
            return 0x0000
        reply = Dataset()
        reply.Status = int(status)
        reply.ErrorComment = printable(comment, 64)
        return reply

    def open_stream(self, assoc: ScpAssociation, request: C_STORE_RQ) -> tuple[TempFile, bytes]:
        """The temp file (with its header written by the caller) for a C-STORE data set."""
        record = assoc.record
        if record.ae is None:
            raise ValueError("association has no Clara AE title")
        command = request.command_set
        context = assoc._accepted_cx[cast(int, request.context_id)]
        header = file_preamble_and_meta(
            str(command.AffectedSOPClassUID),
            str(command.AffectedSOPInstanceUID),
            str(context.transfer_syntax[0]),
            record.calling,
        )
        slots = record.slots if self.settings.durability == "instance" else None
        temp = self.spool.create_temp(record.ae.ae_title, unplaced=not record.holds, slots=slots)
        return temp, header

    def _store(
        self, event: evt.Event, record: AssociationRecord | None
    ) -> tuple[StoreStatus, str, bool, int]:
        """(status, error comment, newly stored, data set bytes) for one C-STORE request."""
        request = cast(C_STORE, event.request)
        dataset = request.DataSet
        try:
            return self._store_streamed(event, request, dataset, record)
        finally:
            if isinstance(dataset, StreamedDataset):
                dataset.discard()

    def _store_streamed(
        self,
        event: evt.Event,
        request: C_STORE,
        dataset: Any,
        record: AssociationRecord | None,
    ) -> tuple[StoreStatus, str, bool, int]:
        ae = record.ae if record is not None else None
        if ae is None or record is None:
            return StoreStatus.ProcessingFailure, "association has no Clara AE title", False, 0
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        if not ae.accepts(sop_class):
            log.debug("C-STORE to %s: SOP class %s is not accepted", ae.ae_title, sop_class)
            return StoreStatus.RefusedSopClassNotSupported, "SOP class not accepted", False, 0
        if not isinstance(dataset, StreamedDataset) or dataset.size == 0:
            return StoreStatus.ErrorCannotUnderstand, "C-STORE without a data set", False, 0
        if dataset.too_large:
            return self._too_large(record, dataset.size, "")
        if dataset.error is not None:
            return self._write_failed(ae.ae_title, dataset.error)
        temp = dataset.take()
        if temp is None:
            return self._write_failed(ae.ae_title, OSError(errno.EIO, "no spool file"))
        try:
            return self._store_file(event, record, ae, temp, dataset, sop_class, sop_instance)
        finally:
            temp.discard()

    def _store_file(
        self,
        event: evt.Event,
        record: AssociationRecord,
        ae: AeTitleConfig,
        temp: TempFile,
        dataset: StreamedDataset,
        sop_class: str,
        sop_instance: str,
    ) -> tuple[StoreStatus, str, bool, int]:
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            with mmap.mmap(temp.fd, 0, access=mmap.ACCESS_READ) as view:
                ids = peek(
                    view, transfer_syntax, start=dataset.header_length,
                    max_inflated=self.max_instance,
                )  # fmt: skip
        except DatasetTooLargeError:
            return self._too_large(record, dataset.size, " (deflated)")
        except MalformedDatasetError as exc:
            log.warning(
                "C-STORE from %s to %s: instance %s refused: %s",
                record.calling, ae.ae_title, sop_instance, exc,
            )  # fmt: skip
            return StoreStatus.ErrorCannotUnderstand, str(exc), False, 0
        if ids.sop_class_uid != sop_class:
            return (
                StoreStatus.ErrorDataSetDoesNotMatchSopClass,
                "SOP Class UID differs from the request",
                False,
                0,
            )
        if ids.sop_instance_uid != sop_instance:
            return (
                StoreStatus.ErrorCannotUnderstand,
                "SOP Instance UID differs from the request",
                False,
                0,
            )
        group_uid = ids.study_instance_uid if ae.grouping == "study" else ids.series_instance_uid
        durable = self.settings.durability == "instance"
        try:
            stored = self.spool.store_temp(
                temp, ae.grouping, group_uid, sop_instance, dataset.size,
                durable=durable, holds=record.holds, slots=record.slots if durable else None,
            )  # fmt: skip
            if not durable:  # a duplicate may be another's unsynced copy
                record.unsynced += 1
        except OSError as exc:
            return self._write_failed(ae.ae_title, exc)
        if stored and self._on_stored is not None:
            try:
                self._on_stored(ae.ae_title, group_uid)
            except Exception:  # the instance is durable; the callback's failure is only logged
                log.exception("on_stored callback failed for AE title %s", ae.ae_title)
        return StoreStatus.Success, "", stored, dataset.size

    def _too_large(
        self, record: AssociationRecord, size: int, how: str
    ) -> tuple[StoreStatus, str, bool, int]:
        log.warning(
            "C-STORE from %s at %s:%d refused: data set%s of more than %d bytes "
            "(%d received; the limit is dicom.max_instance_mb = %d MiB)",
            record.calling, record.peer, record.port, how, self.max_instance, size,
            self.settings.max_instance_mb,
        )  # fmt: skip
        return StoreStatus.RefusedOutOfResources, "instance too large", False, 0

    @staticmethod
    def _write_failed(ae_title: str, exc: Exception) -> tuple[StoreStatus, str, bool, int]:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            log.error("spool full: C-STORE to %s refused (%s)", ae_title, exc.strerror)
            return StoreStatus.RefusedOutOfResources, "out of disk space", False, 0
        if isinstance(exc, OSError):
            log.error("spool write failed: C-STORE to %s refused (%s)", ae_title, exc)
            return StoreStatus.RefusedOutOfResources, "spool write failed", False, 0
        log.warning("C-STORE to %s refused: %s", ae_title, exc)
        return StoreStatus.ErrorCannotUnderstand, "invalid C-STORE request", False, 0
