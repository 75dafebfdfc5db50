"""The Storage SCU against a real PACS (Orthanc 1.10): what is sent is stored, errors say why."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt

from clara_ray.config.dicom import DestinationConfig
from clara_ray.export.outcome import DicomSendError
from clara_ray.export.policy import classify
from clara_ray.export.scu import echo, send_files
from clara_ray.export.send_plan import read_entry
from clara_ray.sample import generate_phantom, write_ct_series
from tests.conftest import free_port
from tests.peer.orthanc import OrthancError, OrthancServer, orthanc_fixture

pytestmark = pytest.mark.peer

CALLING = "CLARA"

orthanc = orthanc_fixture()
implicit_only_orthanc = orthanc_fixture(
    config={"AcceptedTransferSyntaxes": [ImplicitVRLittleEndian]}
)


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(slices=12, rows=64, columns=64, seed=3)


@pytest.fixture
def ct_files(tmp_path: Path, phantom) -> list[Path]:
    return write_ct_series(phantom, tmp_path / "ct")


def _secondary_capture(path: Path, study_uid: str) -> Path:
    """A small 8-bit Secondary Capture image in Implicit VR Little Endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "PHANTOM^CLARA"
    ds.PatientID = "CLARA0001"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _uids(files: list[Path]) -> set[str]:
    return {read_entry(f).sop_instance for f in files}


def _no_requestor_threads() -> bool:
    return not any(t.name.startswith("RequestorThread") for t in threading.enumerate())


def test_ct_series_is_stored(orthanc: OrthancServer, ct_files: list[Path]) -> None:
    seen: list[int] = []
    result = send_files(orthanc.destination(), ct_files, calling_ae=CALLING, progress=seen.append)

    assert result.sent == len(ct_files) == 12
    assert result.failed == []
    assert result.ok
    assert result.bytes == sum(f.stat().st_size for f in ct_files)
    assert result.seconds > 0
    assert seen == list(range(1, 13))
    assert orthanc.sop_instance_uids() == _uids(ct_files)
    study_uid = orthanc.instance_tags(orthanc.instances()[0])["StudyInstanceUID"]
    assert len(orthanc.find(study_uid)) == 12
    assert _no_requestor_threads()


def test_echo_returns_round_trip_seconds(orthanc: OrthancServer) -> None:
    seconds = echo(orthanc.destination(), calling_ae=CALLING)
    assert 0 < seconds < 5


def test_wrong_called_ae_is_rejected_with_reason(
    orthanc: OrthancServer, ct_files: list[Path]
) -> None:
    destination = orthanc.destination("PACS", ae_title="NOT-ORTHANC")
    with pytest.raises(
        DicomSendError,
        match=rf"destination 'PACS' \(AE 'NOT-ORTHANC' at 127\.0\.0\.1:{orthanc.dicom_port}\).*"
        r"rejected.*Rejected Permanent.*Called AE title not recognised",
    ) as caught:
        send_files(destination, ct_files, calling_ae=CALLING)
    assert caught.value.kind == "rejected"
    assert caught.value.reject == (1, 1, 7)
    assert classify(caught.value) == "fail"
    with pytest.raises(DicomSendError, match="Called AE title not recognised"):
        echo(destination, calling_ae=CALLING)
    assert orthanc.instances() == []
    assert _no_requestor_threads()


def test_closed_port_is_unreachable_quickly(ct_files: list[Path]) -> None:
    port = free_port()
    destination = DestinationConfig(name="GONE", ae_title="GONE", host="127.0.0.1", port=port)
    started = time.monotonic()
    with pytest.raises(
        DicomSendError,
        match=rf"destination 'GONE' \(AE 'GONE' at 127\.0\.0\.1:{port}\): "
        r"unreachable: Connection refused",
    ) as caught:
        send_files(destination, ct_files, calling_ae=CALLING, timeout=5)
    assert time.monotonic() - started < 5
    assert caught.value.kind == "unreachable"
    assert classify(caught.value) == "retry"
    with pytest.raises(DicomSendError, match="unreachable: Connection refused"):
        echo(destination, calling_ae=CALLING, timeout=5)


def test_mixed_sop_classes_and_transfer_syntaxes_are_all_stored(
    orthanc: OrthancServer, tmp_path: Path, phantom
) -> None:
    study_uid = generate_uid()
    explicit = write_ct_series(phantom, tmp_path / "explicit", study_uid=study_uid)
    rle = write_ct_series(
        phantom,
        tmp_path / "rle",
        study_uid=study_uid,
        series_number=2,
        transfer_syntax=RLELossless,
    )
    implicit = write_ct_series(
        phantom,
        tmp_path / "implicit",
        study_uid=study_uid,
        series_number=3,
        transfer_syntax=ImplicitVRLittleEndian,
    )
    sc = _secondary_capture(tmp_path / "sc.dcm", study_uid)
    files = [*explicit, sc, *rle, *implicit]

    result = send_files(orthanc.destination(), files, calling_ae=CALLING)

    assert (result.sent, result.failed) == (37, [])
    assert orthanc.sop_instance_uids() == _uids(files)
    assert len(orthanc.find(study_uid)) == 37
    # Sent as encoded: each instance arrives in its file's own transfer syntax.
    syntaxes = {
        orthanc.instance_tags(i)["SOPInstanceUID"]: orthanc.get(
            f"/instances/{i}/metadata/TransferSyntax"
        )
        for i in orthanc.instances()
    }
    for f in files:
        entry = read_entry(f)
        assert syntaxes[entry.sop_instance] == entry.transfer_syntax, f


def test_fallback_context_and_refused_syntax(
    implicit_only_orthanc: OrthancServer, tmp_path: Path, phantom
) -> None:
    """A peer accepting only Implicit VR: Explicit VR files are converted, RLE ones fail."""
    explicit = write_ct_series(phantom, tmp_path / "explicit")
    rle = write_ct_series(phantom, tmp_path / "rle", transfer_syntax=RLELossless)

    result = send_files(implicit_only_orthanc.destination(), [*explicit, *rle], calling_ae=CALLING)

    assert result.sent == len(explicit)
    assert [name for name, _ in result.failed] == [str(f) for f in rle]
    assert all(
        isinstance(reason, str) and reason.startswith("no-context:") and "RLE Lossless" in reason
        for _, reason in result.failed
    )
    assert classify(result) == "fail"
    assert implicit_only_orthanc.sop_instance_uids() == _uids(explicit)
    tags = implicit_only_orthanc.get(
        f"/instances/{implicit_only_orthanc.instances()[0]}/metadata/TransferSyntax"
    )
    assert tags == ImplicitVRLittleEndian != ExplicitVRLittleEndian


def test_unreadable_file_is_reported_and_the_rest_sent(
    orthanc: OrthancServer, tmp_path: Path, ct_files: list[Path]
) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a DICOM file" * 20)
    missing = tmp_path / "missing.dcm"

    result = send_files(orthanc.destination(), [junk, *ct_files, missing], calling_ae=CALLING)

    assert result.sent == len(ct_files)
    assert [name for name, _ in result.failed] == [str(junk), str(missing)]
    assert all(str(reason).startswith("unreadable:") for _, reason in result.failed)
    assert classify(result) == "fail"
    assert orthanc.sop_instance_uids() == _uids(ct_files)


def test_error_during_send_aborts_the_association(
    orthanc: OrthancServer, ct_files: list[Path]
) -> None:
    def explode(done: int) -> None:
        if done == 3:
            raise RuntimeError("operator cancelled the export")

    with pytest.raises(RuntimeError, match="operator cancelled"):
        send_files(orthanc.destination(), ct_files, calling_ae=CALLING, progress=explode)
    assert _no_requestor_threads()
    assert len(orthanc.instances()) == 3
    # Orthanc is not left holding a half-open association: a new send goes through at once.
    started = time.monotonic()
    assert send_files(orthanc.destination(), ct_files, calling_ae=CALLING).ok
    assert time.monotonic() - started < 5
    assert len(orthanc.instances()) == 12


def test_tls_destination_needs_a_context(ct_files: list[Path]) -> None:
    destination = DestinationConfig(
        name="SECURE", ae_title="PACS", host="127.0.0.1", port=free_port(), tls=True
    )
    with pytest.raises(ValueError, match=r"destination 'SECURE'.*tls=True; pass ssl_context"):
        send_files(destination, ct_files, calling_ae=CALLING)


def test_silent_peer_times_out(ct_files: list[Path]) -> None:
    """A peer that accepts TCP but never answers the A-ASSOCIATE-RQ: a timeout, retried."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        destination = DestinationConfig(name="MUTE", ae_title="MUTE", host="127.0.0.1", port=port)
        started = time.monotonic()
        with pytest.raises(
            DicomSendError, match=r"destination 'MUTE' .*no answer to the association request"
        ) as caught:
            send_files(destination, ct_files, calling_ae=CALLING, timeout=1)
    assert time.monotonic() - started < 5
    assert caught.value.kind == "timeout"
    assert classify(caught.value) == "retry"
    assert _no_requestor_threads()


def test_missing_orthanc_is_an_error_not_a_skip(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path / "o", executable=str(tmp_path / "no-such-Orthanc"))
    with pytest.raises(OrthancError, match="no-such-Orthanc is not installed"):
        server.start()
    assert not server.running


@pytest.fixture
def scripted_scp():
    """A pynetdicom Storage SCP answering each SOP Instance UID with a chosen status."""
    statuses: dict[str, int] = {}
    ae = AE(ae_title="SCRIPTED")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)

    def on_store(event: evt.Event) -> int:
        return statuses.get(event.request.AffectedSOPInstanceUID, 0x0000)

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    port = server.server_address[1]
    destination = DestinationConfig(
        name="SCRIPTED", ae_title="SCRIPTED", host="127.0.0.1", port=port
    )
    try:
        yield destination, statuses
    finally:
        server.shutdown()


def test_instance_statuses_are_reported(scripted_scp, ct_files: list[Path]) -> None:
    destination, statuses = scripted_scp
    uids = [read_entry(f).sop_instance for f in ct_files]
    statuses[uids[1]] = 0xB000  # warning: stored with coercion
    statuses[uids[2]] = 0xA700  # out of resources
    statuses[uids[3]] = 0xA900  # does not match SOP class

    result = send_files(destination, ct_files, calling_ae=CALLING)

    assert result.sent == len(ct_files) - 2
    assert result.failed == [(str(ct_files[2]), 0xA700), (str(ct_files[3]), 0xA900)]
    assert classify(result) == "retry"
    statuses[uids[2]] = 0x0000
    assert classify(send_files(destination, ct_files, calling_ae=CALLING)) == "fail"
    assert _no_requestor_threads()


def test_tls_to_a_plain_peer_fails_the_handshake(
    orthanc: OrthancServer, ct_files: list[Path]
) -> None:
    plain = orthanc.destination("SECURE")
    destination = plain.model_copy(update={"tls": True})
    context = ssl.create_default_context()
    started = time.monotonic()
    with pytest.raises(
        DicomSendError, match=r"destination 'SECURE' .*TLS handshake failed"
    ) as caught:
        send_files(destination, ct_files, calling_ae=CALLING, ssl_context=context, timeout=5)
    assert time.monotonic() - started < 5
    assert caught.value.kind == "tls"
    assert classify(caught.value) == "fail"
    assert orthanc.instances() == []


@pytest.fixture
def slow_scp():
    """A pynetdicom Storage SCP taking 0.2 s to answer each C-STORE; yields its destination."""
    ae = AE(ae_title="SLOW")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)

    def on_store(event: evt.Event) -> int:
        time.sleep(0.2)
        return 0x0000

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield DestinationConfig(
            name="SLOW", ae_title="SLOW", host="127.0.0.1", port=server.server_address[1]
        )
    finally:
        server.shutdown()


def test_a_send_stops_at_its_deadline_and_reports_the_rest_for_a_retry(
    slow_scp: DestinationConfig, ct_files: list[Path]
) -> None:
    started = time.monotonic()
    result = send_files(slow_scp, ct_files, calling_ae=CALLING, deadline=started + 1.2)

    assert time.monotonic() - started < 1.2 + 2.0  # one C-STORE and the release past it
    assert 1 <= result.sent < len(ct_files)
    assert len(result.failed) == len(ct_files) - result.sent
    assert [name for name, _ in result.failed] == [str(f) for f in ct_files[result.sent :]]
    assert all(
        status == "timeout: not sent before the export's lease ran out "
        "(dicom.export.lease_seconds bounds one attempt)"
        for _, status in result.failed
    )
    assert classify(result) == "retry"
    assert _no_requestor_threads()


def test_a_send_past_its_deadline_opens_no_association(ct_files: list[Path]) -> None:
    closed = DestinationConfig(name="PACS", ae_title="PACS", host="127.0.0.1", port=free_port())
    seen: list[int] = []

    result = send_files(
        closed, ct_files, calling_ae=CALLING, deadline=time.monotonic(), progress=seen.append
    )

    assert result.sent == 0
    assert len(result.failed) == len(ct_files)
    assert seen == [len(ct_files)]
    assert classify(result) == "retry"
