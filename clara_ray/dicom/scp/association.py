"""The acceptor association of the Storage SCP, the record its log line is built from,
and :class:`ScpHost`: what the layers need from their Storage SCP.

:class:`ScpAssociation` only adds what the layers (:mod:`.transport`,
:mod:`.acse`, :mod:`.tuning`) need to reach their :class:`~.storage.StorageScp`;
the request handler in :mod:`.transport` installs those layers.  They reach it as
an :class:`ScpHost` (which it satisfies structurally), so none of them imports
:mod:`.storage`, which imports them all.  ``ScpHost`` lives here because its
methods take the association, and every layer imports this module already.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ

from clara_ray.config.dicom import AeTitleConfig, DicomSettings
from clara_ray.dicom.policy import Rejection
from clara_ray.dicom.spool import GroupHolds, SlotPool, TempFile

__all__ = ["AssociationRecord", "ScpAssociation", "ScpHost", "StreamOpener"]

_PYNETDICOM_LOG = logging.getLogger("pynetdicom")


@dataclass
class AssociationRecord:
    """What the end-of-association log line says."""

    peer: str
    port: int
    started: float
    calling: str = "-"
    called: str = "-"
    ae: AeTitleConfig | None = None
    admitted: bool = False
    instances: int = 0
    duplicates: int = 0
    failures: int = 0
    echoes: int = 0
    bytes: int = 0
    unsynced: int = 0  # instances acknowledged but not yet synced (durability "association")
    sync_error: str = ""
    holds: GroupHolds = field(default_factory=GroupHolds)  # groups stored into, held open
    slots: SlotPool = field(default_factory=SlotPool)  # durable slots, settled before holds go


class StreamOpener(Protocol):
    """Opens the spool temp file of an arriving C-STORE data set (``StoreHandler``)."""

    def open_stream(self, assoc: ScpAssociation, request: C_STORE_RQ) -> tuple[TempFile, bytes]: ...


class ScpHost(Protocol):
    """What the transport, ACSE, DUL/DIMSE layers and the association need from the
    Storage SCP that serves them."""

    @property
    def settings(self) -> DicomSettings: ...
    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...
    @property
    def pdu_bound(self) -> int: ...
    @property
    def max_instance(self) -> int: ...
    @property
    def handler(self) -> StreamOpener: ...

    def _hand_off(self, sock: socket.socket, address: Any) -> bool: ...
    def _connected(self, sock: Any) -> None: ...
    def _attach(self, sock: Any, assoc: ScpAssociation) -> None: ...
    def _forget(self, sock: Any) -> None: ...
    def _tls_failed(self, sock: Any, address: Any, exc: Exception) -> None: ...
    def _pdu_refused(self, assoc: ScpAssociation, declared: int, limit: int) -> None: ...
    def _admit(self, assoc: ScpAssociation, called: str, calling: str) -> Rejection | None: ...
    def _sync(self, assoc: ScpAssociation) -> bool: ...
    def _finished(self, assoc: ScpAssociation) -> None: ...


class ScpAssociation(Association):
    """An acceptor association that knows its Storage SCP and reports its end."""

    def __init__(self, ae: AE, scp: ScpHost, record: AssociationRecord) -> None:
        super().__init__(ae, MODE_ACCEPTOR)
        self.scp = scp
        self.record = record
        self.refused_pdu = ""
        self.rejection: Rejection | None = None

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self.scp._finished(self)

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop without its 1 ms sleep per turn.

        The loop waits for the next message in :meth:`~.tuning.PromptDimse.get_msg`
        instead (up to 2 ms), so a C-STORE request is served as soon as it is decoded;
        pynetdicom's loop slept 1 ms before every look at its message queue.  A DIMSE
        provider that returns at once (not ``waits_for_messages``) keeps pynetdicom's loop.
        """
        if not getattr(self.dimse, "waits_for_messages", False):
            super()._run_reactor()
            return
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _PYNETDICOM_LOG.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                _PYNETDICOM_LOG.info(
                    "Association Aborted"
                    + (" (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "")
                )
                self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                _PYNETDICOM_LOG.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return
