"""The transport layer of the Storage SCP: guarded sockets, the server and hand-off.

:class:`Server` binds with SO_REUSEPORT, hands connections to idler sibling
receivers, does TLS handshakes in each connection's thread; :class:`RequestHandler`
builds each association with its layers (:class:`GuardedSocket`,
:class:`~.acse.PolicyAcse`, :class:`~.tuning.AdaptiveDul`, :class:`~.tuning.PromptDimse`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from clara_ray.dicom.scp.acse import PolicyAcse
from clara_ray.dicom.scp.association import AssociationRecord, ScpAssociation, ScpHost
from clara_ray.dicom.scp.tuning import AdaptiveDul, PromptDimse

__all__ = ["GuardedSocket", "ScpRequestHandler", "Server", "shutdown"]

log = logging.getLogger("clara_ray.dicom.scp")  # one logger for the whole receiver

_STANDARD_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)
_ABORT_INVALID_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])  # A-ABORT, provider, 0x06


class GuardedSocket(AssociationSocket):
    """Refuses oversized PDUs before reading them; reads with large ``recv_into`` calls.

    For :func:`~.data_pdus.read_data_pdu` it also reads a PDU's body into one reused
    buffer (:meth:`recv_reused`) and takes back bytes it read but leaves to pynetdicom
    (:meth:`unread`), which the next reads return first.
    """

    streams_data_pdus = True

    def __init__(self, assoc: ScpAssociation, client_socket: socket.socket, limit: int) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self.limit = limit
        self._refused = False
        self._unread = bytearray()
        self._reused = bytearray()

    @property
    def ready(self) -> bool:
        return bool(self._unread) or bool(super().ready)

    @property
    def has_unread(self) -> bool:
        return bool(self._unread)

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        """Put ``data`` back in front of what is still to be read."""
        self._unread[:0] = data

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if sock is None or self._refused:
            return bytearray()
        if nr_bytes > self.limit:
            self._refused = True
            assoc = self.assoc
            if isinstance(assoc, ScpAssociation):
                assoc.scp._pdu_refused(assoc, nr_bytes, self.limit)
            with contextlib.suppress(OSError):
                sock.sendall(_ABORT_INVALID_PDU)
                sock.shutdown(socket.SHUT_RDWR)
            # A short read makes pynetdicom's DUL close the connection (Evt17).
            return bytearray()
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = min(nr_bytes, len(self._unread))
        if got:
            view[:got] = self._unread[:got]
            del self._unread[:got]
        got = self._fill(sock, view, got)
        return buf if got == nr_bytes else buf[:got]

    def recv_reused(self, nr_bytes: int) -> memoryview:
        """The next ``nr_bytes`` (at most :attr:`limit`, none unread), read into this
        socket's reused buffer: valid until the next call; shorter if the peer closed."""
        sock = self.socket
        if sock is None or self._refused or nr_bytes > self.limit or self._unread:
            raise ValueError(
                "recv_reused needs an open socket, nothing unread and a PDU within the limit"
            )
        if len(self._reused) < nr_bytes:
            self._reused = bytearray(nr_bytes)  # a new buffer: views of the old one stay valid
        view = memoryview(self._reused)[:nr_bytes]
        return view[: self._fill(sock, view, 0)]

    @staticmethod
    def _fill(sock: Any, view: memoryview, got: int) -> int:
        """Read into ``view`` from ``got`` on until it is full or the peer closed; the count."""
        total = len(view)
        while got < total:
            n = sock.recv_into(view[got:], total - got)
            if n == 0:  # closed mid-PDU: a short read, which the DUL reports as Evt17
                return got
            got += n
        return got

    def _shutdown_socket(self) -> None:
        super()._shutdown_socket()
        dul = self.assoc.dul
        if dul.state_machine.current_state == "Sta2":
            # Closed before any A-ASSOCIATE-RQ (AA-5): the acceptor thread waits for one until
            # acse_timeout; None is what that wait returns on timeout, so it ends now.
            dul.to_user_queue.put(None)  # type: ignore[arg-type]


class ScpRequestHandler(RequestHandler):
    """Builds each association with the Storage SCP's layers."""

    server: Server

    def _create_association(self) -> Association:
        scp = self.server.scp
        host, port = self.client_address[0], int(self.client_address[1])
        assoc = ScpAssociation(self.ae, scp, AssociationRecord(host, port, time.monotonic()))
        for standard, handler in _STANDARD_HANDLERS:  # debug log formatting per PDU and message
            if any(h == handler for h, _ in assoc.get_handlers(standard)):  # type: ignore[misc]
                assoc.unbind(standard, handler)
        assoc.dul = AdaptiveDul(assoc)
        assoc.acse_timeout = assoc.acse_timeout  # the timers live in the DUL: set them again
        assoc.network_timeout = assoc.network_timeout
        assoc.acse = PolicyAcse(assoc)
        assoc.dimse = PromptDimse(assoc)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{host}:{port}"
        assoc.set_socket(GuardedSocket(assoc, self.request, scp.pdu_bound))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = self.server.contexts  # read-only during negotiation
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention:
                if handlers:
                    assoc.bind(event, *handlers)
            else:
                for handler, args in handlers:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        scp._attach(self.request, assoc)
        return assoc


class Server(ThreadedAssociationServer):
    """SO_REUSEPORT, balanced among receivers, TCP_NODELAY, TLS handshakes off the accept
    loop, idle-connection bound."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, *args: Any, scp: ScpHost, **kwargs: Any) -> None:
        self.scp = scp
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = cast(socket.socket, self.socket).accept()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            raise
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.scp._hand_off(request, client_address):
            return
        self.serve_connection(request, client_address)

    def serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        """Serve an accepted TCP socket (ours, or one a sibling receiver handed over)."""
        sock.settimeout(self.scp.settings.network_timeout)
        request: socket.socket = sock
        tls = self.scp.ssl_context
        if tls is not None:
            request = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.scp._connected(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.scp.settings.acse_timeout)
                request.do_handshake()
                request.settimeout(self.scp.settings.network_timeout)
            except (OSError, ValueError) as exc:
                self.scp._tls_failed(request, client_address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("DICOM connection from %s failed", client_address[0])
        self.scp._forget(request)


def shutdown(sock: Any) -> None:
    """Shut ``sock`` down both ways, ignoring a socket already closed."""
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_RDWR)
