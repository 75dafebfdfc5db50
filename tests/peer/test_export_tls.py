"""TLS export to a real PACS (Orthanc 1.10 with DICOM TLS) trusting the system CA store.

The PACS's certificate is issued by a test CA.  With ``dicom.tls.ca_certificates``
unset, the exporter trusts the system store, which the test replaces as an
administrator would, with ``SSL_CERT_FILE`` naming a bundle that holds the CA,
set in the process that sends (the DICOM adapter's, in production).  The send
goes through the adapter's own code: ``core_exports`` with ``ClientTls``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clara_ray.config.dicom import DestinationConfig, DicomSettings, TlsSettings
from clara_ray.dicom.tls import ClientTls
from clara_ray.export.send_plan import read_entry
from clara_ray.export.workers import core_exports
from tests.peer.dicom_helpers import Certificates, make_certificates, write_study
from tests.peer.export_helpers import Bench
from tests.peer.orthanc import OrthancError, OrthancServer

pytestmark = pytest.mark.peer


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def tls_pacs(tmp_path: Path, certs: Certificates) -> Iterator[OrthancServer]:
    """Orthanc answering DICOM over TLS only, with a server certificate of the test CA."""
    server = OrthancServer(
        tmp_path / "orthanc",
        config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.server_cert),
            "DicomTlsPrivateKey": str(certs.server_key),
            "DicomTlsTrustedCertificates": str(certs.ca),
            "DicomTlsRemoteCertificateRequired": False,
        },
    )
    try:
        server.start()
    except OrthancError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    bench = Bench(tmp_path / "bench")
    yield bench
    bench.close()


def _export(bench: Bench, pacs: OrthancServer, files: list[Path], tls: TlsSettings) -> str:
    """Send one export to ``pacs`` over TLS as the adapter does; the Core's record after it."""
    destination = pacs.destination("SECURE").model_copy(update={"tls": True})
    settings = DicomSettings(tls=tls)
    bench.add_destination(DestinationConfig.model_validate(destination.model_dump()))
    bench.add_export("secure", "SECURE", files)
    exports = core_exports(bench, bench.storage, settings, ClientTls(settings.tls), "test")
    runner = threading.Thread(target=exports.run, args=(lambda: ["SECURE"], 1.0), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    try:
        while bench.state("secure") not in ("Succeeded", "Failed"):
            if time.monotonic() > deadline:
                raise AssertionError("the TLS export neither succeeded nor failed in 30 s")
            time.sleep(0.05)
    finally:
        exports.close()
        runner.join(10)
    return bench.state("secure")


def test_tls_export_trusts_the_system_ca_store(
    bench: Bench,
    tls_pacs: OrthancServer,
    certs: Certificates,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = write_study(tmp_path / "study", slices=3)
    bundle = tmp_path / "system-ca.pem"
    bundle.write_bytes(certs.ca.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    state = _export(bench, tls_pacs, files, TlsSettings())

    rec = bench.get_export("secure")
    assert state == "Succeeded", rec.reason
    assert rec.sent == 3
    assert tls_pacs.sop_instance_uids() == {read_entry(f).sop_instance for f in files}


def test_tls_export_to_a_peer_outside_the_trusted_store_fails_saying_why(
    bench: Bench,
    tls_pacs: OrthancServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = write_study(tmp_path / "study", slices=2)
    other = make_certificates(
        tmp_path / "other-ca"
    )  # a CA that did not sign the PACS's certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))

    state = _export(bench, tls_pacs, files, TlsSettings())

    rec = bench.get_export("secure")
    assert state == "Failed"
    assert f"destination 'SECURE' (AE 'ORTHANC' at 127.0.0.1:{tls_pacs.dicom_port})" in rec.reason
    assert "TLS handshake failed: the peer's certificate is not trusted" in rec.reason
    assert "SSL_CERT_FILE" in rec.reason
    assert "cannot read the results" not in rec.reason
    assert tls_pacs.instances() == []
