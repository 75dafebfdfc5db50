"""An association request the peer closes without an answer is made once more.

The peer is a bare TCP server on loopback that reads each A-ASSOCIATE-RQ and
then closes the connection, or answers the second one with an A-ASSOCIATE-RJ
(rejected permanent, service user, called AE title not recognised).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clara_ray.config.dicom import DestinationConfig
from clara_ray.export.outcome import DicomSendError
from clara_ray.export.scu import echo

REJECT_CALLED_AE = bytes([0x03, 0, 0, 0, 0, 4, 0, 0x01, 0x01, 0x07])


@contextmanager
def _peer(answers: list[bytes | None]) -> Iterator[tuple[int, list[int]]]:
    """Serve one connection per answer (None: close without one); yields (port, served)."""
    server = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                served.append(1)
                if answer is not None:
                    conn.sendall(answer)
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], served
    finally:
        server.close()
        thread.join(5)


def _destination(port: int) -> DestinationConfig:
    return DestinationConfig(name="PACS", ae_title="PEER", host="127.0.0.1", port=port)


def test_a_request_closed_without_answer_is_made_once_more() -> None:
    with (
        _peer([None, REJECT_CALLED_AE]) as (port, served),
        pytest.raises(DicomSendError, match="Called AE title not recognised") as caught,
    ):
        echo(_destination(port), calling_ae="CLARA", timeout=5)
    assert caught.value.kind == "rejected"
    assert caught.value.reject == (1, 1, 7)
    assert len(served) == 2


def test_a_peer_that_always_closes_is_reported_after_the_second_request() -> None:
    with (
        _peer([None, None]) as (port, served),
        pytest.raises(DicomSendError, match="the peer aborted or closed") as caught,
    ):
        echo(_destination(port), calling_ae="CLARA", timeout=5)
    assert caught.value.kind == "aborted"
    assert len(served) == 2
