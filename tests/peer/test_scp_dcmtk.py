"""The Storage SCP against real peers: dcmtk echoscu/storescu and raw pynetdicom/TCP clients."""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from pynetdicom import AE, _config

from clara_ray.config.dicom import AeTitleConfig
from clara_ray.dicom.spool import Spool
from clara_ray.dicom.tls import client_ssl_context, server_ssl_context
from clara_ray.errors import ConfigError
from clara_ray.sample import write_sample_study
from tests.peer.dicom_helpers import (
    CT_IMAGE_STORAGE,
    NODELAY_HANDLERS,
    RunningScp,
    clara_config,
    connect,
    dataset_part,
    dcmtk,
    dcmtk_popen,
    make_certificates,
    read_until_closed,
    running_scp,
    scp_settings,
    scu_ae,
    wait_until,
    write_study,
)

pytestmark = pytest.mark.peer

LOG = "clara_ray.dicom.scp"
ROOT = Path(__file__).resolve().parents[2]


def _echo(port: int, called: str = "CLARA", *args: str) -> tuple[int, str]:
    done = dcmtk("echoscu", "-aec", called, *args, "127.0.0.1", str(port), timeout=30)
    return done.returncode, done.stdout


def _association_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOG and "association " in r.getMessage()
    ]


def test_echoscu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    with running_scp(tmp_path) as running:
        rc, output = _echo(running.port)
        assert rc == 0, output
        wait_until(lambda: running.scp.stats()["associations"] == 1, 5, "the association to end")
        wait_until(lambda: len(_association_lines(caplog)) == 1, 5, "the association log line")
    assert running.scp.stats()["echoes"] == 1
    (line,) = _association_lines(caplog)
    assert "ECHOSCU -> CLARA from 127.0.0.1" in line and "released" in line and "1 echoes" in line


def test_storescu_study_lands_byte_identical(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = write_sample_study(tmp_path / "study", slices=10)
    with running_scp(tmp_path) as running:
        done = dcmtk("storescu", "-aec", "CLARA", "-pdu", "131072", "+sd", "127.0.0.1",
                     str(running.port), tmp_path / "study")  # fmt: skip
        assert done.returncode == 0, done.stdout
        wait_until(lambda: len(_association_lines(caplog)) == 1, 5, "the association log line")
        (group,) = running.spool.open_groups()
        stored = {p.name: p for p in running.spool.files(group.path)}
    study = pydicom.dcmread(sent[0], stop_before_pixels=True)
    assert (group.called_ae, group.grouping, group.group_uid) == (
        "CLARA",
        "study",
        study.StudyInstanceUID,
    )
    assert len(stored) == 10
    for path in sent:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        received = stored[f"{uid}.dcm"]
        assert dataset_part(received) == dataset_part(path)
        ds = pydicom.dcmread(received)
        assert ds.file_meta.SourceApplicationEntityTitle == "STORESCU"
        assert ds.file_meta.MediaStorageSOPInstanceUID == uid
    stats = running.scp.stats()
    assert (stats["instances"], stats["duplicates"], stats["failures"]) == (10, 0, 0)
    (line,) = _association_lines(caplog)
    assert "STORESCU -> CLARA" in line and "10 stored, 0 duplicates, 0 failed" in line
    assert "released" in line
    assert "PHANTOM" not in caplog.text and "CLARA0001" not in caplog.text  # no patient data


def test_compressed_instances_are_kept_as_sent(tmp_path: Path) -> None:
    sent = write_study(tmp_path / "rle", slices=3, transfer_syntax=RLELossless)
    with running_scp(tmp_path) as running:
        done = dcmtk("storescu", "-xr", "-aec", "CLARA", "+sd", "127.0.0.1", str(running.port),
                     tmp_path / "rle")  # fmt: skip
        assert done.returncode == 0, done.stdout
        stored = running.stored_files()
    assert len(stored) == 3
    for path in stored:
        assert (
            pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            == RLELossless
        )
    assert sorted(dataset_part(p) for p in stored) == sorted(dataset_part(p) for p in sent)


def test_unknown_called_ae_is_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    write_study(tmp_path / "study", slices=1)
    with running_scp(tmp_path) as running:
        rc, output = _echo(running.port, "NOBODY")
        assert rc != 0
        assert "Called AE Title Not Recognized" in output
        done = dcmtk("storescu", "-aec", "NOBODY", "+sd", "127.0.0.1", str(running.port),
                     tmp_path / "study")  # fmt: skip
        assert done.returncode != 0
        assert "Called AE Title Not Recognized" in done.stdout
        assert running.stored_files() == []
        assert running.scp.stats()["rejected"] == 2
        wait_until(lambda: len(_association_lines(caplog)) == 2, 5, "two association log lines")
    for line in _association_lines(caplog):
        assert "-> NOBODY" in line
        assert (
            "rejected (1, 1, 7): called AE title 'NOBODY' is not a configured Clara AE title"
            in line
        )


def test_transfer_syntax_choice(tmp_path: Path) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    ae.add_requested_context(CT_IMAGE_STORAGE, [RLELossless])
    ae.add_requested_context(CT_IMAGE_STORAGE, [JPEG2000Lossless])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.88.22")  # Enhanced SR, default syntaxes
    with running_scp(tmp_path) as running:
        assoc = ae.associate("127.0.0.1", running.port, ae_title="CLARA")
        assert assoc.is_established
        try:
            accepted = [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts]
        finally:
            assoc.release()
    assert accepted == [
        ExplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
        ExplicitVRLittleEndian,
    ]


def test_unknown_source_is_rejected_and_a_listed_one_accepted(tmp_path: Path) -> None:
    settings = scp_settings(reject_unknown_sources=True)
    config = clara_config("CLARA", sources=(("MODALITY", "127.0.0.1"),))
    with running_scp(tmp_path, settings, config) as running:
        rc, output = _echo(running.port, "CLARA", "-aet", "STRANGER")
        assert rc != 0
        assert "Calling AE Title Not Recognized" in output
        rc, output = _echo(running.port, "CLARA", "-aet", "MODALITY")
        assert rc == 0, output
        running.scp.update_config(clara_config("CLARA", sources=(("STRANGER", "127.0.0.1"),)))
        rc, output = _echo(running.port, "CLARA", "-aet", "STRANGER")
        assert rc == 0, output


def test_ignored_sop_class_gets_a_failure_status(tmp_path: Path) -> None:
    ae = AeTitleConfig(
        ae_title="NOCT", pipelines=("sample",), ignored_sop_classes=(CT_IMAGE_STORAGE,)
    )
    write_study(tmp_path / "study", slices=2)
    with running_scp(tmp_path, config=clara_config("CLARA", ae)) as running:
        done = dcmtk("storescu", "-v", "-aec", "NOCT", "+sd", "127.0.0.1", str(running.port),
                     tmp_path / "study")  # fmt: skip
        assert "Refused: SOPClassNotSupported" in done.stdout
        assert done.returncode != 0
        assert running.stored_files() == []
        assert running.scp.stats()["failures"] >= 1  # storescu stops at the first failure


def test_malformed_instances_are_refused_and_the_rest_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_study(tmp_path / "study", slices=5, size=32)
    truncated = files[1].read_bytes()
    files[1].write_bytes(truncated[: len(truncated) - 100])  # cut inside Pixel Data
    raw = bytearray(files[3].read_bytes())
    rows_at = raw.find(b"\x28\x00\x10\x00US\x02\x00")
    struct.pack_into("<H", raw, rows_at + 8, 33)  # Rows no longer matches the pixel bytes
    files[3].write_bytes(bytes(raw))
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send file bytes as they are
    with running_scp(tmp_path) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA", evt_handlers=NODELAY_HANDLERS
        )
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(path) for path in files]
        finally:
            assoc.release()
        stored = running.stored_files()
    codes = [int(s.Status) for s in statuses]
    assert codes == [0x0000, 0xC000, 0x0000, 0xC000, 0x0000]
    assert "truncated" in statuses[1].ErrorComment
    assert "Pixel Data" in statuses[3].ErrorComment
    assert sorted(p.name for p in stored) == sorted(
        f"{pydicom.dcmread(files[i], stop_before_pixels=True).SOPInstanceUID}.dcm"
        for i in (0, 2, 4)
    )


def test_handler_errors_become_failure_statuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_study(tmp_path / "study", slices=3, size=32)
    calls = {"n": 0}
    real_store = Spool.store_temp

    def flaky(self: Spool, *args: object, **kwargs: object) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        if calls["n"] == 2:
            raise RuntimeError("bug")
        return real_store(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Spool, "store_temp", flaky)
    with running_scp(tmp_path) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA", evt_handlers=NODELAY_HANDLERS
        )
        try:
            statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files]
        finally:
            assoc.release()
        assert statuses == [0xA700, 0x0110, 0x0000]
        rc, output = _echo(running.port)  # the listener lives on
        assert rc == 0, output


def test_twenty_concurrent_senders_store_each_instance_once(tmp_path: Path) -> None:
    sent = write_study(tmp_path / "study", slices=10, size=64)
    with running_scp(tmp_path) as running:
        args = ["-aec", "CLARA", "+sd", "127.0.0.1", str(running.port), str(tmp_path / "study")]
        senders = [dcmtk_popen("storescu", "-aet", f"SENDER{i}", *args) for i in range(20)]
        outputs = [p.communicate(timeout=120)[0] for p in senders]
        assert [p.returncode for p in senders] == [0] * 20, outputs
        wait_until(lambda: running.scp.stats()["active"] == 0, 10, "all associations to end")
        (group,) = running.spool.open_groups()
        stored = running.spool.files(group.path)
        stats = running.scp.stats()
    assert len(stored) == len(sent) == group.files
    assert sorted(dataset_part(p) for p in stored) == sorted(dataset_part(p) for p in sent)
    assert (stats["instances"], stats["duplicates"], stats["failures"]) == (10, 190, 0)
    assert [p for p in Path(running.spool.root).rglob("*") if p.name.endswith(".tmp")] == []


def test_idle_connections_do_not_lock_peers_out(tmp_path: Path) -> None:
    with running_scp(tmp_path) as running:
        idle = [connect(running.port) for _ in range(10)]
        try:
            started = time.monotonic()
            rc, output = _echo(running.port)
            assert rc == 0, output
            assert time.monotonic() - started < 3
        finally:
            for sock in idle:
                sock.close()


def test_an_idle_flood_evicts_the_oldest_idle_connections(tmp_path: Path) -> None:
    with running_scp(tmp_path, scp_settings(max_associations=25)) as running:
        idle = [connect(running.port) for _ in range(60)]
        try:
            rc, output = _echo(running.port)
            assert rc == 0, output
            assert running.scp.stats()["evicted"] >= 60 - 25
            assert read_until_closed(idle[0], 2) == b""  # the oldest was closed
        finally:
            for sock in idle:
                sock.close()


def test_idle_connections_time_out(tmp_path: Path) -> None:
    with running_scp(tmp_path, scp_settings(acse_timeout=1.0)) as running:
        sock = connect(running.port)
        started = time.monotonic()
        assert read_until_closed(sock, 5) == b""
        assert 0.5 < time.monotonic() - started < 4
        sock.close()


def test_oversized_declared_pdu_is_refused_before_buffering(tmp_path: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with running_scp(tmp_path) as running:
        sock = connect(running.port)
        sock.sendall(b"\x01\x00" + struct.pack(">L", 0x7FFFFFFF) + b"\x00\x01" + b"\x00" * 4096)
        started = time.monotonic()
        reply = read_until_closed(sock, 3)
        sock.close()
        assert time.monotonic() - started < 2
        assert reply[:1] in (b"", b"\x07")  # an A-ABORT, then the close
        rc, output = _echo(running.port)
        assert rc == 0, output
        assert running.scp.stats()["pdu_refused"] == 1
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024, f"the process grew by {grown_kib} KiB"


def test_oversized_pdu_inside_an_association_aborts_it(tmp_path: Path) -> None:
    with running_scp(tmp_path, scp_settings(max_pdu=65536)) as running:
        assoc = scu_ae().associate(
            "127.0.0.1", running.port, ae_title="CLARA", evt_handlers=NODELAY_HANDLERS
        )
        assert assoc.is_established
        try:
            assoc.dul.socket.socket.sendall(b"\x04\x00" + struct.pack(">L", 65536 + 7))
            wait_until(lambda: assoc.is_aborted or not assoc.is_alive(), 3, "the SCP to abort")
        finally:
            assoc.abort()
        assert running.scp.stats()["pdu_refused"] == 1
        rc, output = _echo(running.port)
        assert rc == 0, output


def test_low_disk_refuses_associations(tmp_path: Path) -> None:
    with running_scp(tmp_path, scp_settings(disk_reserve_mb=10**12)) as running:
        rc, output = _echo(running.port)
        assert rc != 0
        assert "Rejected Transient" in output and "Local Limit Exceeded" in output


def test_association_limit_is_a_transient_rejection(tmp_path: Path) -> None:
    with running_scp(tmp_path, scp_settings(max_associations=25)) as running:
        held = []
        try:
            for _ in range(25):
                assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA")
                assert assoc.is_established
                held.append(assoc)
            rc, output = _echo(running.port)
            assert rc != 0 and "Local Limit Exceeded" in output
        finally:
            for assoc in held:
                assoc.release()
        wait_until(lambda: running.scp.stats()["active"] == 0, 5, "the associations to end")
        rc, output = _echo(running.port)
        assert rc == 0, output


def test_tls_required(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    settings = scp_settings(tls=certs.tls())
    with running_scp(tmp_path, settings) as running:
        rc, output = _echo(running.port)
        assert rc != 0, output
        rc, output = _echo(running.port, "CLARA", "+tls", str(certs.client_key), str(certs.client_cert),
                           "+cf", str(certs.ca))  # fmt: skip
        assert rc == 0, output
        context = client_ssl_context(certs.tls())
        assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA",
                                   tls_args=(context, "localhost"))  # fmt: skip
        assert assoc.is_established
        try:
            assert int(assoc.send_c_echo().Status) == 0x0000
        finally:
            assoc.release()
        assert running.scp.stats()["tls_failures"] >= 1


def test_tls_client_certificate_required(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    settings = scp_settings(tls=certs.tls(require_client_certificate=True))
    with running_scp(tmp_path, settings) as running:
        rc, output = _echo(running.port, "CLARA", "+tls", str(certs.client_key), str(certs.client_cert),
                           "+cf", str(certs.ca))  # fmt: skip
        assert rc == 0, output
        anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anonymous.load_verify_locations(cafile=str(certs.ca))
        assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA",
                                   tls_args=(anonymous, "localhost"))  # fmt: skip
        assert not assoc.is_established
        assert running.scp.stats()["associations"] == 1
        assert running.scp.stats()["tls_failures"] == 1
        rc, output = _echo(running.port, "CLARA", "+tls", str(certs.client_key), str(certs.client_cert),
                           "+cf", str(certs.ca))  # fmt: skip
        assert rc == 0, output


def test_idle_tls_handshake_does_not_stall_the_listener(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    with running_scp(tmp_path, scp_settings(tls=certs.tls())) as running:
        idle = connect(running.port)  # TCP only, never says hello
        try:
            rc, output = _echo(running.port, "CLARA", "+tls", str(certs.client_key),
                               str(certs.client_cert), "+cf", str(certs.ca))  # fmt: skip
            assert rc == 0, output
        finally:
            idle.close()


def test_two_scps_share_one_port(tmp_path: Path) -> None:
    with running_scp(tmp_path / "a") as first:
        settings = scp_settings(port=first.port)
        with running_scp(tmp_path / "b", settings) as second:
            assert second.port == first.port
            for _ in range(24):
                rc, output = _echo(first.port)
                assert rc == 0, output
                if first.scp.stats()["associations"] and second.scp.stats()["associations"]:
                    break
            assert first.scp.stats()["associations"] > 0
            assert second.scp.stats()["associations"] > 0


def test_stop_drops_open_associations(tmp_path: Path) -> None:
    with running_scp(tmp_path) as running:
        assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA")
        assert assoc.is_established
        started = time.monotonic()
        running.scp.stop()
        assert time.monotonic() - started < 5
        wait_until(lambda: not assoc.is_established, 5, "the association to drop")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", running.port), timeout=1).close()


def test_tls_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    with pytest.raises(ConfigError, match=r"dicom.tls.certificate must name a readable PEM file"):
        server_ssl_context(certs.tls(certificate=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"must be a matching PEM certificate and key"):
        server_ssl_context(certs.tls(private_key=certs.client_key))
    context = server_ssl_context(certs.tls(require_client_certificate=True))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_acknowledged_instances_survive_a_kill(tmp_path: Path) -> None:
    sent = write_study(tmp_path / "study", slices=10, size=64)
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from clara_ray.dicom.scp import StorageScp
        from clara_ray.dicom.spool import Spool
        from tests.peer.dicom_helpers import clara_config, scp_settings
        scp = StorageScp(scp_settings(), clara_config(), Spool(Path({str(tmp_path / "spool")!r})))
        print(scp.start(), flush=True)
        time.sleep(600)
        """
    )
    receiver = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        done = dcmtk("storescu", "-aec", "CLARA", "+sd", "127.0.0.1", str(port), tmp_path / "study")
        assert done.returncode == 0, done.stdout
    finally:
        receiver.kill()  # SIGKILL right after the last Success status
        receiver.wait(timeout=10)
    recovered = Spool(tmp_path / "spool")
    (group,) = recovered.open_groups()
    stored = recovered.files(group.path)
    assert sorted(dataset_part(p) for p in stored) == sorted(dataset_part(p) for p in sent)


def _instances_and_active(running: RunningScp) -> tuple[int, int]:
    stats = running.scp.stats()
    return stats["instances"], stats["active"]


def test_association_durability_syncs_once_before_the_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_study(tmp_path / "study", slices=10)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    with running_scp(tmp_path, scp_settings(durability="association")) as running:
        syncs: list[tuple[int, int]] = []
        real_sync = running.spool.sync
        monkeypatch.setattr(
            running.spool,
            "sync",
            lambda: (syncs.append(_instances_and_active(running)), real_sync()),
        )
        monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
        done = dcmtk("storescu", "-aec", "CLARA", "+sd", "127.0.0.1", str(running.port),
                     tmp_path / "study")  # fmt: skip
        assert done.returncode == 0, done.stdout
        assert len(running.stored_files()) == 10
    assert syncs == [(10, 1)]  # one sync, after the tenth instance, in the open association
    assert len(fsyncs) <= 4  # only the new AE title and group folders, never per instance


def test_a_failed_sync_aborts_the_association_instead_of_releasing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    (path,) = write_study(tmp_path / "study", slices=1)
    with running_scp(tmp_path, scp_settings(durability="association")) as running:

        def broken_sync() -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(running.spool, "sync", broken_sync)
        assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA")
        assert assoc.is_established
        assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0x0000
        assoc.release()
        assert assoc.is_aborted and not assoc.is_released
        wait_until(lambda: len(_association_lines(caplog)) == 1, 5, "the association log line")
    (line,) = _association_lines(caplog)
    assert "aborted: spool sync failed (Input/output error)" in line


def test_association_durability_syncs_for_duplicates_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (path,) = write_study(tmp_path / "study", slices=1)
    with running_scp(tmp_path, scp_settings(durability="association")) as running:
        syncs: list[int] = []
        real_sync = running.spool.sync
        monkeypatch.setattr(running.spool, "sync", lambda: (syncs.append(1), real_sync()))
        for _ in range(2):  # the second association's instance is a duplicate of the first's
            assoc = scu_ae().associate("127.0.0.1", running.port, ae_title="CLARA")
            assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0x0000
            assoc.release()
            assert assoc.is_released
        stats = running.scp.stats()
    assert (stats["instances"], stats["duplicates"]) == (1, 1)
    assert len(syncs) == 2  # its Success may rest on the first copy: synced before release
