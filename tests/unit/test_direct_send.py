"""AdaptiveDul.send_now: a response leaves from the caller's thread only where DT-1 would
send the same bytes next, never ahead of a PDU handed to the DUL thread before it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from clara_ray.dicom.scp.data_pdus import p_data_tf
from clara_ray.dicom.scp.transport import _STANDARD_HANDLERS, GuardedSocket
from clara_ray.dicom.scp.tuning import AdaptiveDul


@pytest.fixture
def dul() -> Iterator[tuple[AdaptiveDul, socket.socket]]:
    assoc = Association(AE(), MODE_ACCEPTOR)
    for event, handler in _STANDARD_HANDLERS:  # as the receiver's request handler does
        assoc.unbind(event, handler)
    ours, peer = socket.socketpair()
    peer.settimeout(5)
    dul = AdaptiveDul(assoc)
    assoc.dul = dul
    dul.socket = GuardedSocket(assoc, ours, limit=1 << 20)  # type: ignore[arg-type]
    dul.event_queue.get_nowait()  # Evt5 (connection open): this test drives no state machine
    dul.state_machine.current_state = "Sta6"
    try:
        yield dul, peer
    finally:
        ours.close()
        peer.close()


def test_in_data_transfer_the_pdu_goes_out_at_once(dul: tuple[AdaptiveDul, socket.socket]) -> None:
    provider, peer = dul
    pdu = p_data_tf(1, b"\x03response")
    assert provider.send_now(pdu)
    assert peer.recv(100) == pdu


def test_a_pdu_handed_to_the_dul_thread_goes_first(dul: tuple[AdaptiveDul, socket.socket]) -> None:
    provider, peer = dul
    queued = P_DATA()
    queued.presentation_data_value_list.append((1, b"\x03first"))
    provider.send_pdu(queued)
    assert not provider.send_now(p_data_tf(1, b"\x03second"))  # still in the queue
    taken = provider.to_provider_queue.get_nowait()  # DT-1 takes it off the queue...
    assert not provider.send_now(p_data_tf(1, b"\x03second"))  # ...and has not sent it yet
    provider._send(P_DATA_TF(taken))
    assert provider.send_now(p_data_tf(1, b"\x03second"))
    first, second = P_DATA_TF(queued).encode(), p_data_tf(1, b"\x03second")
    received = b""
    while len(received) < len(first) + len(second):
        received += peer.recv(100)
    assert received == first + second


@pytest.mark.parametrize("state", ["Sta7", "Sta8", "Sta13"])
def test_outside_data_transfer_nothing_is_sent(
    dul: tuple[AdaptiveDul, socket.socket], state: str
) -> None:
    provider, _ = dul
    provider.state_machine.current_state = state
    assert not provider.send_now(p_data_tf(1, b"\x03response"))


def test_a_listener_to_sent_pdus_keeps_the_dul_path(dul: tuple[AdaptiveDul, socket.socket]) -> None:
    provider, _ = dul
    provider.assoc.bind(evt.EVT_PDU_SENT, lambda event: None)
    assert not provider.send_now(p_data_tf(1, b"\x03response"))
