"""The Storage SCP: a pynetdicom association server in a thread, writing into the spool.

:class:`StorageScp` keeps the books on connections and associations (pending,
established, evicted, handed off), applies the association policy for
:class:`~.acse.PolicyAcse`, syncs the spool before a release is answered, and
logs exactly one INFO line per association.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE, _config, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)

from clara_ray.config.dicom import DicomConfig, DicomSettings
from clara_ray.dicom.balance import ConnectionBalancer
from clara_ray.dicom.policy import Rejection, decide
from clara_ray.dicom.receive import StreamedDataset
from clara_ray.dicom.scp.association import ScpAssociation, ScpHost
from clara_ray.dicom.scp.contexts import supported_contexts
from clara_ray.dicom.scp.handlers import StoreHandler
from clara_ray.dicom.scp.transport import ScpRequestHandler, Server, shutdown
from clara_ray.dicom.sources import SourceAddresses
from clara_ray.dicom.spool import Spool
from clara_ray.dicom.tls import server_ssl_context

__all__ = ["StorageScp"]

log = logging.getLogger("clara_ray.dicom.scp")  # one logger for the whole receiver

_MIN_PDU_BOUND = 64 * 1024


class StorageScp:
    """A C-ECHO/C-STORE SCP writing into a :class:`Spool`; plain class, thread inside.

    ``on_stored(called_ae, group_uid)`` is called after each newly stored instance
    (not for duplicates), from the association's thread; its errors are logged.
    """

    def __init__(
        self,
        settings: DicomSettings,
        config: DicomConfig,
        spool: Spool,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_stored: Callable[[str, str], None] | None = None,
        balancer: ConnectionBalancer | None = None,
    ) -> None:
        self.settings = settings
        self.balancer = balancer
        self.spool = spool
        self.ssl_context = ssl_context
        if ssl_context is None and settings.tls.enabled:
            self.ssl_context = server_ssl_context(settings.tls)
        self.pdu_bound = max(settings.max_pdu, _MIN_PDU_BOUND) + 6
        self.max_instance = settings.max_instance_mb * 1024 * 1024
        self.sources = SourceAddresses()
        self.sources.update(config)
        self._refresh_stop = threading.Event()
        self._config = config
        self._lock = threading.Lock()
        self._established = 0
        self._pending: OrderedDict[Any, None] = OrderedDict()  # connected, no A-ASSOCIATE-RQ yet
        self._live: dict[Any, ScpAssociation] = {}
        self._open: set[Any] = set()  # accepted sockets not yet closed, as the balancer sees them
        self._stats = dict.fromkeys(
            (
                "connections", "associations", "rejected", "instances", "duplicates",
                "failures", "bytes", "echoes", "pdu_refused", "tls_failures", "evicted",
                "handed_off", "taken_over",
            ),
            0,
        )  # fmt: skip
        self._evictions_logged_at = -1e9
        self.handler = StoreHandler(
            settings, spool, self.max_instance, on_stored, self._lock, self._stats
        )
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        quiet = logging.getLogger("pynetdicom")
        if quiet.level < logging.WARNING:
            quiet.setLevel(logging.WARNING)

    # -- public API ------------------------------------------------------------------------
    def start(self) -> int:
        """Bind ``settings.host:settings.port`` (0: any free port) and serve; returns the port."""
        if self._server is not None:
            raise RuntimeError("StorageScp is already started")
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.maximum_pdu_size = s.max_pdu
        # pynetdicom counts every connected socket as an association; we count established
        # associations ourselves (decide()) and bound idle connections separately.
        ae.maximum_associations = 1_000_000
        ae.require_called_aet = False
        host: ScpHost = self  # the layers reach this SCP as an ScpHost: mypy checks it is one
        server = cast(
            Server,
            ae.make_server(
                (s.host, s.port),
                ae_title=s.ae_title,
                contexts=supported_contexts(),
                evt_handlers=[
                    (evt.EVT_C_STORE, self.handler.handle_store),
                    (evt.EVT_C_ECHO, self.handler.handle_echo),
                ],
                server_class=Server,
                request_handler=ScpRequestHandler,
                scp=host,
            ),
        )
        for event, handler in (
            (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
            (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
            (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
            (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
        ):
            if any(h == handler for h, _ in server.get_handlers(event)):  # type: ignore[misc]
                server.unbind(event, handler)  # per-PDU log formatting nobody reads
        ae._servers.append(server)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="StorageScp",
            daemon=True,
        )
        self._thread.start()
        self._refresh_stop.clear()
        threading.Thread(
            target=self.sources.run,
            args=(self._refresh_stop,),
            name="StorageScp-sources",
            daemon=True,
        ).start()
        if self.balancer is not None:
            self.balancer.start(self._take_over)
        port = int(server.server_address[1])
        log.info(
            "DICOM listener %s on %s:%d (%s, max PDU %d, %d associations)",
            s.ae_title, s.host, port, "TLS" if self.ssl_context else "plain", s.max_pdu, s.max_associations,
        )  # fmt: skip
        return port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop the open connections and wait for their threads (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._refresh_stop.set()
        if self.balancer is not None:
            self.balancer.stop()
        with self._lock:
            live = list(self._live.items())
            waiting = list(self._pending)
        for sock in [*waiting, *(sock for sock, _ in live)]:
            shutdown(sock)
        deadline = time.monotonic() + timeout
        for _sock, assoc in live:
            assoc.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def update_config(self, config: DicomConfig) -> None:
        """Use ``config`` for new associations (running ones keep their AE title's settings)."""
        if config.sources != self._config.sources:
            self.sources.update(config)
        self._config = config

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._stats)
            out["active"] = self._established
            out["open_connections"] = len(self._open)
        return out

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    # -- connections and associations (called from pynetdicom threads) ---------------------
    def _hand_off(self, sock: socket.socket, address: Any) -> bool:
        """True when a less busy sibling receiver took ``sock`` (our copy is then closed)."""
        if self.balancer is None:
            return False
        with self._lock:
            own = len(self._open)
        if not self.balancer.hand_off(sock, address, own):
            return False
        sock.close()
        with self._lock:
            self._stats["handed_off"] += 1
        return True

    def _take_over(self, sock: socket.socket, address: tuple[str, int]) -> None:
        server = self._server
        if server is None:
            raise RuntimeError("the listener is stopped")
        server.serve_connection(sock, address)
        with self._lock:
            self._stats["taken_over"] += 1

    def _opened(self, sock: Any, is_open: bool) -> None:
        """Track ``sock`` as open or closed (call with the lock held) and publish the count."""
        if is_open:
            self._open.add(sock)
        else:
            self._open.discard(sock)
        if self.balancer is not None:
            self.balancer.publish(len(self._open))

    def _connected(self, sock: Any) -> None:
        evict: list[Any] = []
        limit = max(16, self.settings.max_associations)
        with self._lock:
            self._stats["connections"] += 1
            self._opened(sock, True)
            self._pending[sock] = None
            while len(self._pending) > limit:
                old, _ = self._pending.popitem(last=False)
                evict.append(old)
                self._stats["evicted"] += 1
            now = time.monotonic()
            report = bool(evict) and now - self._evictions_logged_at > 10.0
            if report:
                self._evictions_logged_at = now
        if report:
            log.warning(
                "closing idle DICOM connections: more than %d await association "
                "(%d closed so far, logged at most every 10 s)",
                limit, self._stats["evicted"],
            )  # fmt: skip
        for old in evict:
            shutdown(old)

    def _attach(self, sock: Any, assoc: ScpAssociation) -> None:
        with self._lock:
            self._live[sock] = assoc

    def _forget(self, sock: Any) -> None:
        with self._lock:
            self._pending.pop(sock, None)
            self._live.pop(sock, None)
            self._opened(sock, False)

    def _tls_failed(self, sock: Any, address: Any, exc: Exception) -> None:
        self._forget(sock)
        with self._lock:
            self._stats["tls_failures"] += 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.info(
            "DICOM connection from %s:%s: TLS handshake failed (%s)", address[0], address[1], reason
        )

    def _pdu_refused(self, assoc: ScpAssociation, declared: int, limit: int) -> None:
        assoc.refused_pdu = f"PDU declaring {declared} bytes refused (limit {limit})"
        with self._lock:
            self._stats["pdu_refused"] += 1

    def _admit(self, assoc: ScpAssociation, called: str, calling: str) -> Rejection | None:
        record = assoc.record
        record.called, record.calling = called.strip(), calling.strip()
        config = self._config
        try:
            free = self.spool.free_bytes()
        except OSError:
            free = 0
        with self._lock:
            self._pending.pop(assoc.dul.socket.socket if assoc.dul.socket else None, None)
            rejection = decide(
                record.called, record.calling, record.peer, config, self.settings, free,
                active_associations=self._established, resolved=self.sources.addresses,
            )  # fmt: skip
            if rejection is None:
                self._established += 1
                record.admitted = True
                record.ae = config.aetitle(record.called)
                self._stats["associations"] += 1
            else:
                self._stats["rejected"] += 1
        assoc.rejection = rejection
        return rejection

    def _finished(self, assoc: ScpAssociation) -> None:
        r = assoc.record
        with self._lock:
            for sock, live in list(self._live.items()):
                if live is assoc:
                    del self._live[sock]
                    self._pending.pop(sock, None)
                    self._opened(sock, False)
            if r.admitted:
                self._established -= 1
        message = assoc.dimse.message
        if message is not None and isinstance(message.data_set, StreamedDataset):
            message.data_set.discard()  # an instance cut short by the association's end
        r.slots.settle()  # the stored instances' names made durable, before the holds go
        r.holds.release()
        if r.unsynced:  # aborted or dropped: its Success statuses still deserve the disk
            self._sync(assoc)
        if assoc.rejection is not None:
            outcome = f"rejected {assoc.rejection.codes}: {assoc.rejection.message}"
        elif r.sync_error:
            outcome = f"aborted: spool sync failed ({r.sync_error})"
        elif assoc.refused_pdu:
            outcome = f"aborted: {assoc.refused_pdu}"
        elif assoc.is_released:
            outcome = "released"
        elif assoc.is_aborted or r.admitted:
            outcome = "aborted"
        else:
            outcome = "closed without an association request"
        log.info(
            "association %s -> %s from %s:%d %s: %d stored, %d duplicates, %d failed, "
            "%d echoes, %d bytes in %.2f s",
            r.calling, r.called, r.peer, r.port, outcome, r.instances, r.duplicates, r.failures,
            r.echoes, r.bytes, time.monotonic() - r.started,
        )  # fmt: skip

    def _sync(self, assoc: ScpAssociation) -> bool:
        """fsync what the association wrote without fsync; False (logged) if that fails."""
        record = assoc.record
        if not record.unsynced:
            return True
        try:
            self.spool.sync()
        except OSError as exc:
            record.sync_error = exc.strerror or str(exc)
            log.error(
                "spool sync failed after %d instances from %s: %s",
                record.unsynced, record.calling, record.sync_error,
            )  # fmt: skip
            return False
        record.unsynced = 0
        return True
