"""Receivers that share a port even out their connections (handed over with SCM_RIGHTS).

The receiving sibling listens on a port of its own, so every TCP connection
reaches the first receiver and any connection the sibling serves can only have
been handed over: the tests are deterministic, not at the mercy of the kernel's
SO_REUSEPORT hash.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from clara_ray.dicom import balance
from clara_ray.dicom.balance import ConnectionBalancer
from clara_ray.dicom.tls import client_ssl_context
from tests.peer.dicom_helpers import (
    RunningScp,
    dataset_part,
    dcmtk,
    make_certificates,
    running_scp,
    scp_settings,
    scu_ae,
    wait_until,
    write_study,
)

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(sys.platform != "linux", reason="connection hand-off is Linux only"),
]


@contextmanager
def _receivers(
    root: Path, count: int, started: int, **settings: object
) -> Iterator[list[RunningScp]]:
    """``started`` receivers of ``count`` sharing a load board and a spool under ``root``."""
    with ExitStack() as stack:
        running = [
            stack.enter_context(
                running_scp(
                    root,
                    scp_settings(**settings),
                    balancer=ConnectionBalancer(root / "receivers.load", index, count),
                )
            )
            for index in range(started)
        ]
        yield running


def _hold(port: int, n: int) -> list[object]:
    held = [scu_ae().associate("127.0.0.1", port, ae_title="CLARA") for _ in range(n)]
    assert all(a.is_established for a in held)
    return held


def test_a_busy_receiver_hands_new_connections_to_an_idle_one(tmp_path: Path) -> None:
    with _receivers(tmp_path, 2, 2) as (first, second):
        held = _hold(first.port, 4)
        try:
            wait_until(lambda: second.scp.stats()["active"] == 2, 5, "two associations on 2nd")
            assert first.scp.stats()["active"] == 2
            assert first.scp.stats()["handed_off"] == second.scp.stats()["taken_over"] == 2
            assert second.scp.stats()["connections"] == 2
            for assoc in held:  # each handed-over association works both ways
                assert int(assoc.send_c_echo().Status) == 0x0000
        finally:
            for assoc in held:
                assoc.release()
        wait_until(lambda: second.scp.stats()["open_connections"] == 0, 5, "connections to close")
        assert first.scp.balancer is not None
        assert first.scp.balancer.loads() == [0, 0]
        assert second.scp.stats()["echoes"] == 2


def test_a_handed_over_storescu_association_stores_its_study(tmp_path: Path) -> None:
    sent = write_study(tmp_path / "study", slices=10)
    with _receivers(tmp_path, 2, 2) as (first, second):
        (held,) = _hold(first.port, 1)
        try:
            done = dcmtk("storescu", "-aec", "CLARA", "+sd", "127.0.0.1", str(first.port),
                         tmp_path / "study")  # fmt: skip
            assert done.returncode == 0, done.stdout
        finally:
            held.release()
        assert second.scp.stats()["instances"] == 10
        assert first.scp.stats()["instances"] == 0
        stored = first.stored_files()
    assert sorted(dataset_part(p) for p in stored) == sorted(dataset_part(p) for p in sent)


def test_a_handed_over_tls_connection_does_its_handshake_in_the_taker(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    with _receivers(tmp_path, 2, 2, tls=certs.tls()) as (first, second):
        held = scu_ae().associate("127.0.0.1", first.port, ae_title="CLARA",
                                  tls_args=(client_ssl_context(certs.tls()), "localhost"))  # fmt: skip
        assert held.is_established
        try:
            done = dcmtk("echoscu", "-aec", "CLARA", "+tls", certs.client_key, certs.client_cert,
                         "+cf", certs.ca, "127.0.0.1", str(first.port))  # fmt: skip
            assert done.returncode == 0, done.stdout
        finally:
            held.release()
        assert second.scp.stats()["echoes"] == 1
        assert second.scp.stats()["taken_over"] == 1


def test_an_unreachable_sibling_leaves_connections_where_they_are(tmp_path: Path) -> None:
    with _receivers(tmp_path, 2, 1) as (only,):
        held = _hold(only.port, 3)
        try:
            assert only.scp.stats()["active"] == 3
            assert only.scp.stats()["handed_off"] == 0
        finally:
            for assoc in held:
                assoc.release()


def test_receiver_index_out_of_range_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="receiver index 2 out of range for 2 receivers"):
        ConnectionBalancer(tmp_path / "receivers.load", 2, 2)


def test_a_receiver_whose_inbox_name_is_held_still_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(balance, "_BIND_PATIENCE", 0.3)
    with _receivers(tmp_path, 2, 1):  # the receiver 0 holds its inbox name
        late = ConnectionBalancer(tmp_path / "receivers.load", 0, 2)
        with running_scp(tmp_path, scp_settings(), balancer=late) as running:
            (assoc,) = _hold(running.port, 1)
            assert int(assoc.send_c_echo().Status) == 0x0000
            assoc.release()
    assert "receiver 0 takes no connections from its siblings" in caplog.text


def _send_to_inbox(address: str, message: bytes, fds: list[int]) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as link:
        link.settimeout(5)
        link.connect(address)
        socket.send_fds(link, [message], fds)
        return link.recv(1)


def test_bad_hand_offs_are_refused_and_the_inbox_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _receivers(tmp_path, 2, 2) as (first, second):
        assert second.scp.balancer is not None
        inbox = second.scp.balancer.inbox_address(1)
        read_end, write_end = os.pipe()
        try:
            assert _send_to_inbox(inbox, b'["127.0.0.1", 1]', []) == b"\x00"
            assert _send_to_inbox(inbox, b"not json", [read_end]) == b"\x00"
            assert _send_to_inbox(inbox, b'["127.0.0.1", 1]', [read_end]) == b"\x00"  # a pipe
        finally:
            os.close(read_end)
            os.close(write_end)
        held = _hold(first.port, 2)  # the second one is still handed over and served
        try:
            assert second.scp.stats()["taken_over"] == 1
            assert all(int(a.send_c_echo().Status) == 0x0000 for a in held)
        finally:
            for assoc in held:
                assoc.release()
    assert "expected one socket, got 0 descriptors" in caplog.text
    assert "the peer address b'not json' is not [host, port]" in caplog.text
    assert "the descriptor handed over is not a TCP socket" in caplog.text
