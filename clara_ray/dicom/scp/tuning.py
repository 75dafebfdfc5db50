"""Latency tuning of pynetdicom's DUL and DIMSE layers, and streamed C-STORE data sets.

:class:`AdaptiveDul` waits on the socket instead of polling while an association is busy,
takes the PDUs that carry only a streamed data set off the socket itself, several per turn
of its loop (:func:`~.data_pdus.read_data_pdu`), and lets a response leave from the
thread that made it (:meth:`AdaptiveDul.send_now`);
:class:`PromptDimse` picks each decoded message up as soon as it is ready,
gives each C-STORE data set a :class:`~clara_ray.dicom.receive.StreamedDataset`
and encodes a plain C-STORE Success response itself (:func:`store_success_command`).
Each shortcut is taken only where its effect is exactly pynetdicom's, and
``tests/unit/test_pynetdicom_contract.py`` pins the pynetdicom code it stands in for.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from clara_ray.dicom.receive import StreamedDataset
from clara_ray.dicom.scp.association import ScpAssociation
from clara_ray.dicom.scp.data_pdus import p_data_tf, read_data_pdu

__all__ = ["AdaptiveDul", "PromptDimse", "store_success_command"]

_MESSAGE_WAIT = 0.002
_BUSY_POLL = 0.0001
_BUSY_WINDOW = 0.25
_MAX_WAIT = 0.05  # a bound on any wait: nothing is missed for longer if a wake-up were lost
_LAST_COMMAND_FRAGMENT = b"\x03"
_SEND_EVENTS = (evt.EVT_PDU_SENT, evt.EVT_DATA_SENT, evt.EVT_FSM_TRANSITION)


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def store_success_command(primitive: Any) -> bytes | None:
    """The encoded command set (Implicit VR Little Endian) of a C-STORE response with
    status Success and nothing optional, as pynetdicom encodes it; None for any other
    primitive (pynetdicom encodes those)."""
    if type(primitive) is not C_STORE or primitive.Status != 0x0000:
        return None
    responding = primitive.MessageIDBeingRespondedTo
    sop_class, sop_instance = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    if not isinstance(responding, int) or not sop_class or not sop_instance:
        return None
    if primitive.OffendingElement is not None or primitive.ErrorComment is not None:
        return None
    body = b"".join(
        (
            _element(0x0002, _uid(str(sop_class))),
            _element(0x0100, struct.pack("<H", 0x8001)),  # C-STORE-RSP
            _element(0x0120, struct.pack("<H", responding)),
            _element(0x0800, struct.pack("<H", 0x0101)),  # no data set
            _element(0x0900, struct.pack("<H", 0x0000)),
            _element(0x1000, _uid(str(sop_instance))),
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


class PromptDimse(DIMSEServiceProvider):
    """Lets the acceptor's polling loop wait briefly on the message queue.

    pynetdicom's acceptor loop sleeps 1 ms, then polls for a decoded message without
    blocking; waiting up to ``_MESSAGE_WAIT`` s for one instead picks each C-STORE up as
    soon as it is decoded (measured here: ~20% more instances/s on one association).
    With it the association's loop drops pynetdicom's 1 ms sleep per turn
    (:meth:`~.association.ScpAssociation._run_reactor`).
    """

    waits_for_messages = True

    def get_msg(self, block: bool = False) -> tuple[Any, Any]:
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(timeout=_MESSAGE_WAIT)
        except queue.Empty:
            return None, None

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a plain C-STORE Success response as one P-DATA without pydicom encoding
        (when nothing listens for sent DIMSE messages), from this thread where
        :meth:`AdaptiveDul.send_now` can; anything else as pynetdicom does."""
        command = store_success_command(primitive)
        limit = self.maximum_pdu_size
        if (
            command is None
            or (limit and len(command) + 6 > limit)
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            super().send_msg(primitive, context_id)
            return
        value = _LAST_COMMAND_FRAGMENT + command
        dul = self.dul
        if isinstance(dul, AdaptiveDul) and dul.send_now(p_data_tf(context_id, value)):
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, value))
        dul.send_pdu(pdata)

    def receive_primitive(self, primitive: Any) -> None:
        """Give each new message a :class:`StreamedDataset` to collect its data set in."""
        assoc = self.assoc
        if self.message is None and isinstance(assoc, ScpAssociation):
            message = DIMSEMessage()
            message.data_set = StreamedDataset(
                message, lambda rq: assoc.scp.handler.open_stream(assoc, rq), assoc.scp.max_instance
            )
            self.message = message
        super().receive_primitive(primitive)


class AdaptiveDul(DULServiceProvider):
    """Waits for work instead of polling while an established association is busy; polls
    at pynetdicom's pace (1 ms) otherwise.

    pynetdicom's DUL thread sleeps ``_run_loop_delay`` whenever the socket has nothing to
    read, then polls it again; at 1 ms, each next C-STORE request was noticed ~1.2 ms
    after our response went out (measured).  While an association in data transfer
    (Sta6) read a PDU within ``_BUSY_WINDOW`` s, the loop instead blocks in ``select``
    on its socket and on a wake-up socket that :meth:`send_pdu` (a response to send)
    and :meth:`kill_dul` write to: it reacts to both at once and burns no CPU between
    them, which leaves the cores to the other receivers.  Idle and not yet associated
    connections keep pynetdicom's polling, so they cost no more CPU than stock pynetdicom.
    """

    def __init__(self, assoc: Association) -> None:
        self._send_lock = threading.RLock()  # a handler of a sent PDU may send again
        self._queued = 0  # primitives handed to send_pdu and not yet sent by _send
        self._busy_until = 0.0
        self._idle_delay = 0.001
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(assoc)

    @property
    def _run_loop_delay(self) -> float:
        if time.monotonic() < self._busy_until:
            return 0.0 if self.state_machine.current_state == "Sta6" else _BUSY_POLL
        return self._idle_delay

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        self._idle_delay = value

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def send_now(self, pdu: bytes) -> bool:
        """Send the encoded P-DATA-TF ``pdu`` from the calling thread, as action DT-1
        (Sta6 + Evt9) would send it from the DUL thread after a hop through its queue.

        False, with nothing sent, unless the association is in data transfer with nothing
        queued to send before it (not even a primitive the DUL thread took off its queue
        and has not sent yet: ``_queued`` counts them), on a plain TCP socket (an SSL
        object must not write while the DUL thread reads), and nothing listens to the
        PDU, data or state-machine events this skips.  The DUL's own sends take the same
        lock, so PDUs never interleave and responses never overtake one another.
        """
        transport = self.socket
        if transport is None or isinstance(transport.socket, ssl.SSLSocket):
            return False
        with self._send_lock:
            if (
                self._queued
                or self.state_machine.current_state != "Sta6"
                or not self.to_provider_queue.empty()
                or any(self.assoc.get_handlers(event) for event in _SEND_EVENTS)
            ):
                return False
            transport.send(pdu)  # a failure puts Evt17 on the event queue, as DT-1's send
        return True

    def _send(self, pdu: Any) -> None:
        with self._send_lock:
            super()._send(pdu)
            self._queued = max(self._queued - 1, 0)

    def send_pdu(self, primitive: Any) -> None:
        with self._send_lock:
            self._queued += 1
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (buffer full) or closed
            self._wake_w.send(b"\x00")

    def _is_transport_event(self) -> bool:
        remaining = self._busy_until - time.monotonic()
        if remaining > 0 and self.state_machine.current_state == "Sta6":
            self._wait_for_work(min(remaining, _MAX_WAIT))
        return bool(super()._is_transport_event())

    def _wait_for_work(self, timeout: float) -> None:
        """Block until the socket is readable, something is to be sent, or ``timeout``."""
        transport = self.socket
        sock = transport.socket if transport is not None else None
        if sock is None or self._kill_thread:
            return
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select would not see them
        try:
            ready, _, _ = select.select([sock, self._wake_r], [], [], timeout)
        except (OSError, ValueError):  # closed: pynetdicom's own check reports it
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass

    def _read_pdu_data(self) -> None:
        """Read the next PDU; while PDUs of a streamed data set keep coming, read on
        (pynetdicom's loop takes one PDU per turn) until one is not, something waits
        to be sent or processed, the thread is told to stop, or nothing is left to read."""
        stream: Any = self.socket
        if not getattr(stream, "streams_data_pdus", False):
            super()._read_pdu_data()
        else:
            while read_data_pdu(self, stream):
                if (
                    self._kill_thread
                    or not self.event_queue.empty()
                    or not self.to_provider_queue.empty()
                    or not stream.ready
                ):
                    break
            else:
                super()._read_pdu_data()
        if self.state_machine.current_state == "Sta6":  # established: data transfer
            self._busy_until = time.monotonic() + _BUSY_WINDOW
