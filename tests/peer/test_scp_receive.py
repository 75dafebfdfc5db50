"""C-STORE data sets streamed to the spool as they arrive, and bounded in size."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import AssociationSocket

from clara_ray.dicom.scp.handlers import StoreHandler
from tests.peer.dicom_helpers import (
    CT_IMAGE_STORAGE,
    NODELAY_HANDLERS,
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


def test_an_instance_cut_short_leaves_no_temp_file(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path / "ct", slices=1, size=512)
    paused, resume = threading.Event(), threading.Event()
    sent = {"pdus": 0}

    def pause_midway(event: evt.Event) -> None:
        if type(event.pdu).__name__ == "P_DATA_TF":
            sent["pdus"] += 1
            if sent["pdus"] == 10:
                paused.set()
                resume.wait(30)

    with running_scp(tmp_path, scp_settings(max_pdu=16384)) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA",
            evt_handlers=[*NODELAY_HANDLERS, (evt.EVT_PDU_SENT, pause_midway)],
        )  # fmt: skip
        sender = threading.Thread(target=assoc.send_c_store, args=(pydicom.dcmread(path),))
        sender.start()
        try:
            assert paused.wait(30)
            wait_until(lambda: bool(_temp_files(running.spool.root)), 10, "the partial instance")
            raw = cast(socket.socket, cast(AssociationSocket, assoc.dul.socket).socket)
            raw.shutdown(socket.SHUT_RDWR)  # the sender goes away mid-instance
        finally:
            resume.set()
            sender.join(60)
            assoc.abort()
        wait_until(lambda: not _temp_files(running.spool.root), 10, "the partial file removed")
        assert running.stored_files() == []
        assert _send(running.port, write_study(tmp_path / "small", slices=1, size=32)) == [0]
