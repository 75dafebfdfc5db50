"""Even out DICOM connections among the receiving processes that share one port.

Receivers bind the same port with SO_REUSEPORT, and the kernel picks the
receiver of each new connection from a hash of its addresses, blind to load:
two modalities sending at once often land on the same process, which then
shares one GIL between both associations while its sibling idles.

A :class:`ConnectionBalancer` corrects that at accept time.  Each receiver
publishes its number of open connections in a slot of a small shared file (the
*load board*, an mmap); on accept, a receiver holding more connections than its
least-loaded sibling passes the accepted socket (before any byte is read) to
that sibling over a Unix socket (``SCM_RIGHTS``), which serves it as if it had
accepted it.  A sibling that cannot be reached (dead, restarting) leaves the
connection where it is: balancing never refuses or loses a connection.

Linux only (abstract Unix sockets, ``SO_PEERCRED``); elsewhere
:func:`balancing_supported` is False and each receiver keeps what it accepts.
Only processes of the same user may hand sockets over.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mmap
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ConnectionBalancer", "balancing_supported"]

log = logging.getLogger(__name__)

_SLOT = struct.Struct("<q")
_MAX_RECEIVERS = 64
_HANDOFF_TIMEOUT = 0.5
_ANSWER_TIMEOUT = 5.0
_BIND_PATIENCE = 5.0
_TAKEN, _REFUSED = b"\x01", b"\x00"
_NOT_TCP = "the descriptor handed over is not a TCP socket"
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def balancing_supported() -> bool:
    return sys.platform == "linux"


class ConnectionBalancer:
    """One receiver's side of the hand-off: its load slot, its inbox, its siblings.

    ``board`` is the load board's path (shared by the receivers of one listener),
    ``index`` this receiver's slot among ``count``.  ``serve(sock, address)`` is
    called, from the inbox thread, for each socket a sibling hands over.
    """

    def __init__(self, board: Path, index: int, count: int) -> None:
        if not 0 <= index < count <= _MAX_RECEIVERS:
            raise ValueError(f"receiver index {index} out of range for {count} receivers")
        self.index = index
        self.count = count
        self._key = hashlib.sha256(str(Path(board).resolve()).encode()).hexdigest()[:16]
        fd = os.open(board, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _SLOT.size * _MAX_RECEIVERS:
                os.ftruncate(fd, _SLOT.size * _MAX_RECEIVERS)
            self._board = mmap.mmap(fd, _SLOT.size * _MAX_RECEIVERS)
        finally:
            os.close(fd)
        self._inbox: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.publish(0)

    def __repr__(self) -> str:
        return f"ConnectionBalancer(index={self.index}, count={self.count})"

    # -- the load board ------------------------------------------------------------------
    def publish(self, open_connections: int) -> None:
        """Record this receiver's number of open connections for its siblings."""
        _SLOT.pack_into(self._board, self.index * _SLOT.size, open_connections)

    def loads(self) -> list[int]:
        return [_SLOT.unpack_from(self._board, i * _SLOT.size)[0] for i in range(self.count)]

    # -- handing over ----------------------------------------------------------------------
    def hand_off(self, sock: socket.socket, address: Any, own_load: int) -> bool:
        """Pass ``sock`` to the least-loaded sibling if it holds fewer connections than
        ``own_load``; True when a sibling took it (the caller then closes its copy)."""
        loads = self.loads()
        for target in sorted(
            (i for i in range(self.count) if i != self.index and loads[i] < own_load),
            key=lambda i: loads[i],
        ):
            if self._send(target, sock, address):
                return True
        return False

    def _send(self, target: int, sock: socket.socket, address: Any) -> bool:
        message = json.dumps(list(address)[:2]).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as link:
            link.settimeout(_HANDOFF_TIMEOUT)
            try:
                link.connect(self.inbox_address(target))
                socket.send_fds(link, [message], [sock.fileno()])
            except OSError as exc:  # not delivered: the socket stays here
                log.debug("receiver %d: hand-off to %d failed: %s", self.index, target, exc)
                return False
            link.settimeout(_ANSWER_TIMEOUT)
            try:
                return link.recv(1) != _REFUSED
            except OSError:  # no answer: the sibling may serve it; never serve a socket twice
                log.warning(
                    "receiver %d: receiver %d did not answer a hand-off", self.index, target
                )
                return True

    def inbox_address(self, index: int) -> str:
        """The abstract Unix socket on which receiver ``index`` takes connections."""
        return f"\0clara-ray-dicom-{self._key}-{index}"

    # -- taking over -----------------------------------------------------------------------
    def start(self, serve: Callable[[socket.socket, tuple[str, int]], None]) -> None:
        """Listen for sockets handed over by siblings; ``serve`` each one."""
        if not balancing_supported():
            return
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + _BIND_PATIENCE
        while True:
            try:
                inbox.bind(self.inbox_address(self.index))
                break
            except OSError as exc:  # a predecessor that is still exiting holds the name
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    inbox.close()
                    log.warning(
                        "receiver %d takes no connections from its siblings: %s", self.index, exc
                    )
                    return
                time.sleep(0.1)
        inbox.listen(64)
        self._inbox = inbox
        self._thread = threading.Thread(
            target=self._receive, args=(inbox, serve), name="DicomHandoff", daemon=True
        )
        self._thread.start()

    def _receive(
        self, inbox: socket.socket, serve: Callable[[socket.socket, tuple[str, int]], None]
    ) -> None:
        while True:
            try:
                link, _ = inbox.accept()
            except OSError:
                return  # closed by stop()
            with link:
                answer = _REFUSED
                try:
                    sock, address = self._take(link)
                except (OSError, ValueError) as exc:
                    log.warning("receiver %d: refused a connection hand-off: %s", self.index, exc)
                else:
                    try:
                        serve(sock, address)
                        answer = _TAKEN
                    except Exception:  # the sender keeps the connection; the inbox goes on
                        log.exception(
                            "receiver %d: serving a handed-over socket failed", self.index
                        )
                        sock.close()
                with contextlib.suppress(OSError):
                    link.sendall(answer)

    def _take(self, link: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
        """The TCP socket and peer address a sibling sent; ValueError (every descriptor
        received closed) for anything else."""
        link.settimeout(_HANDOFF_TIMEOUT)
        pid, uid, _gid = _CREDENTIALS.unpack(
            link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
        )
        message, fds, _flags, _addr = socket.recv_fds(link, 1024, 1)
        try:
            if uid != os.getuid():
                raise ValueError(f"sender pid {pid} runs as uid {uid}, not {os.getuid()}")
            if len(fds) != 1:
                raise ValueError(f"expected one socket, got {len(fds)} descriptors")
            try:
                host, port = json.loads(message)
                address = (str(host), int(port))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"the peer address {message[:64]!r} is not [host, port]") from exc
            try:
                sock = socket.socket(fileno=fds[0])
            except OSError as exc:  # ENOTSOCK: a file or a pipe
                raise ValueError(_NOT_TCP) from exc
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            raise ValueError(_NOT_TCP)
        return sock, address

    def stop(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            with contextlib.suppress(OSError):
                inbox.shutdown(socket.SHUT_RDWR)
            inbox.close()
        if self._thread is not None:
            self._thread.join(2.0)
        self.publish(0)
