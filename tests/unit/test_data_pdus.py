"""The data set fragments of P-DATA-TF items, and the socket reads the data PDU path uses."""

from __future__ import annotations

import queue
import socket
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from clara_ray.dicom.scp.data_pdus import data_fragments
from clara_ray.dicom.scp.transport import GuardedSocket


def item(context_id: int, control: int, value: bytes) -> bytes:
    return struct.pack(">IB", len(value) + 2, context_id) + bytes([control]) + value


def fragments(items: bytes, context_id: int = 3) -> Any:
    found = data_fragments(memoryview(items), context_id)
    if found is None:
        return None
    middle, last = found
    return [bytes(f) for f in middle], None if last is None else bytes(last)


def test_middle_fragments_come_without_their_control_header() -> None:
    assert fragments(item(3, 0x00, b"abc") + item(3, 0x00, b"de")) == ([b"abc", b"de"], None)


def test_a_last_fragment_as_the_final_item_is_returned_whole() -> None:
    assert fragments(item(3, 0x00, b"abc") + item(3, 0x02, b"xyz")) == ([b"abc"], b"\x02xyz")
    assert fragments(item(3, 0x02, b"")) == ([], b"\x02")


def test_reserved_control_bits_are_ignored_as_by_pynetdicom() -> None:
    assert fragments(item(3, 0xFC, b"abc")) == ([b"abc"], None)


@pytest.mark.parametrize(
    ("items", "why"),
    [
        (b"", "no item"),
        (item(3, 0x01, b"cmd"), "a command fragment"),
        (item(3, 0x03, b"cmd"), "a last command fragment"),
        (item(3, 0x00, b"abc") + item(3, 0x01, b"cmd"), "data then command"),
        (item(5, 0x00, b"abc"), "another presentation context"),
        (item(3, 0x02, b"end") + item(3, 0x00, b"abc"), "a last fragment before another item"),
        (item(3, 0x00, b"abc")[:-1], "an item longer than the PDU"),
        (item(3, 0x00, b"abc") + b"\x00\x00", "trailing bytes shorter than an item header"),
        (struct.pack(">IB", 1, 3) + b"\x00", "an item length below 2"),
    ],
)
def test_anything_else_is_left_to_pynetdicom(items: bytes, why: str) -> None:
    assert fragments(items) is None, why


@pytest.fixture
def pair() -> Iterator[tuple[GuardedSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    assoc: Any = SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue()))
    guarded = GuardedSocket(assoc, ours, limit=64)
    try:
        yield guarded, peer
    finally:
        ours.close()
        peer.close()


def test_unread_bytes_are_read_first_then_the_socket(
    pair: tuple[GuardedSocket, socket.socket],
) -> None:
    guarded, peer = pair
    peer.sendall(b"world")
    guarded.unread(b"lo ")
    guarded.unread(b"hel")
    assert guarded.has_unread and guarded.ready
    assert bytes(guarded.recv(4)) == b"hell"
    assert bytes(guarded.recv(7)) == b"o world"
    assert not guarded.has_unread


def test_recv_reused_reads_exactly_and_reuses_its_buffer(
    pair: tuple[GuardedSocket, socket.socket],
) -> None:
    guarded, peer = pair
    peer.sendall(b"0123456789")
    first = guarded.recv_reused(6)
    assert bytes(first) == b"012345"
    second = guarded.recv_reused(4)
    assert bytes(second) == b"6789"
    assert first.obj is second.obj  # no new buffer per PDU
    peer.sendall(b"ab")
    peer.shutdown(socket.SHUT_WR)
    assert bytes(guarded.recv_reused(5)) == b"ab"  # the peer closed: a short read


def test_recv_reused_refuses_what_it_cannot_read_in_one_go(
    pair: tuple[GuardedSocket, socket.socket],
) -> None:
    guarded, _ = pair
    with pytest.raises(ValueError, match="limit"):
        guarded.recv_reused(65)
    guarded.unread(b"x")
    with pytest.raises(ValueError, match="unread"):
        guarded.recv_reused(1)
