"""C-STORE data sets streamed to the spool as they arrive, and bounded in size."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.transport import AssociationSocket

import clara_ray.dicom.scp.tuning as tuning
from clara_ray.dicom.scp.handlers import StoreHandler
from clara_ray.dicom.tls import client_ssl_context
from tests.peer.dicom_helpers import (
    CT_IMAGE_STORAGE,
    NODELAY_HANDLERS,
    RunningScp,
    dataset_part,
    make_certificates,
    running_scp,
    scp_settings,
    scu_ae,
    wait_until,
    write_study,
)

pytestmark = pytest.mark.peer

LOG = "clara_ray.dicom.scp"


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _send(
    port: int, files: list[Path], ae: AE | None = None, handlers: list[Any] | None = None
) -> list[int]:
    assoc = (ae or scu_ae()).associate(
        "127.0.0.1", port, ae_title="CLARA", evt_handlers=[*NODELAY_HANDLERS, *(handlers or [])]
    )
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files]
    finally:
        assoc.release()


def test_an_instance_over_max_instance_mb_is_refused_and_the_next_association_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    large = write_study(tmp_path / "large", slices=1, size=1024)  # 2 MiB of pixels
    small = write_study(tmp_path / "small", slices=2, size=64)
    with running_scp(tmp_path, scp_settings(max_instance_mb=1)) as running:
        assert _send(running.port, large + small[:1]) == [0xA700, 0x0000]
        assert _send(running.port, small[1:]) == [0x0000]  # the receiver keeps serving
        assert len(running.stored_files()) == 2
        assert _temp_files(running.spool.root) == []
    (line,) = [r.getMessage() for r in caplog.records if "refused: data set" in r.getMessage()]
    assert "C-STORE from PYSCU at 127.0.0.1:" in line
    assert "of more than 1048576 bytes" in line and "dicom.max_instance_mb = 1 MiB" in line
    assert "PHANTOM" not in caplog.text  # no patient data


def test_a_deflated_instance_inflating_beyond_the_bound_is_refused(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=1024)
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes(len(ds.PixelData))  # zeros: deflates to a few KiB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    assert deflated.stat().st_size < 1024 * 1024
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, DeflatedExplicitVRLittleEndian)
    with running_scp(tmp_path, scp_settings(max_instance_mb=1)) as running:
        assert _send(running.port, [deflated], ae) == [0xA700]
        assert running.stored_files() == []
        assert _send(running.port, write_study(tmp_path / "small", slices=1, size=32)) == [0]


def test_the_handler_gets_the_data_set_in_a_spool_file_not_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, list[int]]] = []
    real_store = StoreHandler._store

    def spy(self: StoreHandler, event: evt.Event, record: object) -> object:
        in_memory = len(cast(C_STORE, event.request).DataSet.getvalue())  # type: ignore[union-attr]
        seen.append((in_memory, [p.stat().st_size for p in _temp_files(self.spool.root)]))
        return real_store(self, event, record)  # type: ignore[arg-type]

    monkeypatch.setattr(StoreHandler, "_store", spy)
    (path,) = write_study(tmp_path / "ct", slices=1, size=256)
    with running_scp(tmp_path) as running:
        assert _send(running.port, [path]) == [0]
        (stored,) = running.stored_files()
    ((in_memory, temps),) = seen
    assert in_memory == 0
    assert temps == [stored.stat().st_size]  # the whole instance, already in its file


def test_a_large_instance_is_written_in_pieces_as_it_arrives(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=512)  # 512 KiB in 16 KiB PDUs
    paused, resume = threading.Event(), threading.Event()
    sent = {"pdus": 0}

    def pause_midway(event: evt.Event) -> None:
        if type(event.pdu).__name__ == "P_DATA_TF":
            sent["pdus"] += 1
            if sent["pdus"] == 10:  # the command set and a few data set fragments are out
                paused.set()
                resume.wait(30)

    ae = scu_ae()
    statuses: list[int] = []
    with running_scp(tmp_path, scp_settings(max_pdu=16384)) as running:
        sender = threading.Thread(
            target=lambda: statuses.extend(
                _send(running.port, [path], ae, [(evt.EVT_PDU_SENT, pause_midway)])
            )
        )
        sender.start()
        try:
            assert paused.wait(30)
            wait_until(
                lambda: any(p.stat().st_size > 64 * 1024 for p in _temp_files(running.spool.root)),
                10,
                "a spool temp file holding the fragments received so far",
            )
            assert running.stored_files() == []  # not acknowledged: nothing named yet
        finally:
            resume.set()
            sender.join(60)
        assert statuses == [0]
        assert len(running.stored_files()) == 1


@contextmanager
def _sending_paused_midway(running: RunningScp, path: Path, pdus: int) -> Iterator[socket.socket]:
    """A pynetdicom C-STORE of ``path`` to ``running``, paused after its first ``pdus``
    P-DATA PDUs (the receiver holds the partial instance): yields the sender's socket."""
    paused, resume = threading.Event(), threading.Event()
    sent = {"pdus": 0}

    def pause_midway(event: evt.Event) -> None:
        if type(event.pdu).__name__ == "P_DATA_TF":
            sent["pdus"] += 1
            if sent["pdus"] == pdus:
                paused.set()
                resume.wait(30)

    assoc = scu_ae().associate(
        "127.0.0.1", running.port, ae_title="CLARA",
        evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_PDU_SENT, pause_midway)],
    )  # fmt: skip
    sender = threading.Thread(target=assoc.send_c_store, args=(pydicom.dcmread(path),))
    sender.start()
    try:
        assert paused.wait(30)
        wait_until(lambda: bool(_temp_files(running.spool.root)), 10, "the partial instance")
        yield cast(socket.socket, cast(AssociationSocket, assoc.dul.socket).socket)
    finally:
        resume.set()
        sender.join(60)
        assoc.abort()


def test_an_instance_cut_short_leaves_no_temp_file(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=512)
    with running_scp(tmp_path, scp_settings(max_pdu=16384)) as running:
        with _sending_paused_midway(running, path, pdus=10) as raw:
            raw.shutdown(socket.SHUT_RDWR)  # the sender goes away mid-instance
        wait_until(lambda: not _temp_files(running.spool.root), 10, "the partial file removed")
        assert running.stored_files() == []
        assert _send(running.port, write_study(tmp_path / "small", slices=1, size=32)) == [0]


def _count_data_pdus(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many PDUs the receiver took through :func:`read_data_pdu` (taken) or left."""
    counts = {"taken": 0, "left": 0}
    real = tuning.read_data_pdu

    def counted(dul: Any, stream: Any) -> bool:
        taken = real(dul, stream)
        counts["taken" if taken else "left"] += 1
        return taken

    monkeypatch.setattr(tuning, "read_data_pdu", counted)
    return counts


def test_data_set_pdus_go_straight_to_the_spool_file_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_data_pdus(monkeypatch)
    paths = write_study(tmp_path / "ct", slices=2, size=512)  # 512 KiB each, in 16 KiB PDUs
    with running_scp(tmp_path, scp_settings(max_pdu=16384)) as running:
        assert _send(running.port, paths) == [0, 0]
        stored = sorted(dataset_part(p) for p in running.stored_files())
    assert stored == sorted(dataset_part(p) for p in paths)
    data_pdus = sum(-(-len(dataset_part(p)) // (16384 - 6)) for p in paths)
    assert counts["taken"] == data_pdus  # every data set PDU, the last ones included
    assert counts["left"] >= 2  # the command PDUs went through pynetdicom


def _raw_c_store(assoc: Any, path: Path, fragment: int, per_pdu: int, message_id: int) -> int:
    """Send ``path``'s C-STORE over ``assoc``'s socket as raw PDUs carrying ``per_pdu``
    data set fragments of ``fragment`` bytes each; the response's status."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    context_id = next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CT_IMAGE_STORAGE
    )
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    data = dataset_part(path)
    request.DataSet = BytesIO(data)  # so that the command announces a data set
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    command = encode(message.command_set, True, True)

    def pdv(control: int, value: bytes) -> bytes:
        return struct.pack(">IB", len(value) + 2, context_id) + bytes([control]) + value

    def pdu(items: list[bytes]) -> bytes:
        body = b"".join(items)
        return struct.pack(">BBI", 0x04, 0, len(body)) + body

    pieces = [data[i : i + fragment] for i in range(0, len(data), fragment)]
    items = [pdv(0x02 if i == len(pieces) - 1 else 0x00, p) for i, p in enumerate(pieces)]
    raw = cast(socket.socket, cast(AssociationSocket, assoc.dul.socket).socket)
    assoc._reactor_checkpoint.clear()  # as pynetdicom's own requests: its reactor
    while not assoc._is_paused:  # must not take the response
        time.sleep(0.0001)
    try:
        raw.sendall(pdu([pdv(0x03, command)]))
        for start in range(0, len(items), per_pdu):
            raw.sendall(pdu(items[start : start + per_pdu]))
        _, response = assoc.dimse.msg_queue.get(timeout=10)
    finally:
        assoc._reactor_checkpoint.set()
    return int(response.Status)


def test_pdus_of_several_fragments_land_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_data_pdus(monkeypatch)
    paths = write_study(tmp_path / "ct", slices=3, size=128)
    plan = [(paths[0], 4000, 3), (paths[1], 999, 7), (paths[2], 50000, 1)]  # fragment, per PDU
    with running_scp(tmp_path) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA", evt_handlers=NODELAY_HANDLERS
        )
        assert assoc.is_established
        try:
            statuses = [
                _raw_c_store(assoc, path, fragment, per_pdu, message_id)
                for message_id, (path, fragment, per_pdu) in enumerate(plan, start=1)
            ]
        finally:
            assoc.release()
        assert statuses == [0, 0, 0]
        stored = sorted(dataset_part(p) for p in running.stored_files())
    assert stored == sorted(dataset_part(p) for p in paths)
    fragments = [-(-len(dataset_part(path)) // fragment) for path, fragment, _ in plan]
    data_pdus = sum(-(-n // per_pdu) for n, (_, _, per_pdu) in zip(fragments, plan, strict=True))
    assert counts["taken"] == data_pdus  # every PDU of every data set, whatever its items


def test_an_oversized_pdu_in_the_middle_of_a_data_set_aborts_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=512)  # 512 KiB in 64 KiB PDUs
    with running_scp(tmp_path, scp_settings(max_pdu=65536)) as running:
        # after the command and 4 of the data set's 9 PDUs
        with _sending_paused_midway(running, path, pdus=5) as raw:
            raw.sendall(b"\x04\x00" + struct.pack(">L", 65536 + 7))
            wait_until(lambda: running.scp.stats()["pdu_refused"] == 1, 10, "the PDU refused")
        wait_until(lambda: not _temp_files(running.spool.root), 10, "the partial file removed")
        assert running.stored_files() == []
        assert _send(running.port, write_study(tmp_path / "small", slices=1, size=32)) == [0]


@pytest.mark.parametrize(
    "pdu",
    [
        b"\x04\x00" + struct.pack(">LIB", 12, 100, 1) + b"\x00" + b"x" * 6,  # item past the PDU
        b"\x04\x00" + struct.pack(">LIB", 6, 1, 1) + b"\x00",  # item shorter than its header
        b"\x09\x00" + struct.pack(">L", 4) + b"abcd",  # no such PDU type
    ],
    ids=["item-past-the-pdu", "item-length-1", "unknown-pdu-type"],
)
def test_a_malformed_pdu_in_the_middle_of_a_data_set_ends_it_and_stores_nothing(
    tmp_path: Path, pdu: bytes
) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=512)
    with running_scp(tmp_path, scp_settings(max_pdu=65536)) as running:
        with _sending_paused_midway(running, path, pdus=5) as raw:
            raw.sendall(pdu)  # left to pynetdicom, which aborts the association
            raw.settimeout(10)
            assert raw.recv(1, socket.MSG_PEEK) == b"\x07"  # an A-ABORT PDU comes back
        wait_until(lambda: not _temp_files(running.spool.root), 10, "the partial file removed")
        assert running.stored_files() == []
        assert _send(running.port, write_study(tmp_path / "small", slices=1, size=32)) == [0]


def _count_direct_sends(monkeypatch: pytest.MonkeyPatch) -> dict[bool, int]:
    counts = {True: 0, False: 0}
    real = tuning.AdaptiveDul.send_now

    def counted(self: tuning.AdaptiveDul, pdu: bytes) -> bool:
        sent = real(self, pdu)
        counts[sent] += 1
        return sent

    monkeypatch.setattr(tuning.AdaptiveDul, "send_now", counted)
    return counts


def test_success_responses_leave_from_the_handler_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_direct_sends(monkeypatch)
    paths = write_study(tmp_path / "ct", slices=3, size=64)
    with running_scp(tmp_path) as running:
        assert _send(running.port, paths) == [0, 0, 0]
        assert len(running.stored_files()) == 3
    assert counts == {True: 3, False: 0}


def test_over_tls_responses_go_through_the_dul_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_direct_sends(monkeypatch)
    certs = make_certificates(tmp_path / "certs")
    paths = write_study(tmp_path / "ct", slices=2, size=256)
    with running_scp(tmp_path, scp_settings(tls=certs.tls(), max_pdu=16384)) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA",
            tls_args=(client_ssl_context(certs.tls()), "localhost"),
        )  # fmt: skip
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths]
        finally:
            assoc.release()
        assert statuses == [0, 0]
        stored = sorted(dataset_part(p) for p in running.stored_files())
    assert stored == sorted(dataset_part(p) for p in paths)
    assert counts == {True: 0, False: 2}  # an SSL object never writes while it reads
