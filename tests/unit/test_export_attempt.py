"""One export attempt (clara_ray.export.attempt.run_export): what each failure is called.

No peer is needed: each case fails before an association, or at a closed port.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from clara_ray.config.dicom import DestinationConfig, DicomSettings, TlsSettings
from clara_ray.contracts.records import ExportRecord
from clara_ray.dicom.tls import ClientTls
from clara_ray.export.attempt import run_export
from clara_ray.export.manifest import result_path
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from tests.conftest import free_port


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "storage"))


def claimed(destination: DestinationConfig, files: list[str]) -> dict:
    record = ExportRecord(
        export_id="e1", job_id="job-1", operator="export", destination=destination.name,
        files=files, attempts=1,
    )  # fmt: skip
    return {"export": record, "destination": destination.model_dump()}


def secure(port: int = 4242) -> DestinationConfig:
    return DestinationConfig(name="SECURE", ae_title="PACS", host="127.0.0.1", port=port, tls=True)


def never_called() -> ssl.SSLContext:
    raise AssertionError("the TLS context is made only for a TLS destination")


def test_a_tls_configuration_error_is_reported_as_one(storage: Storage, tmp_path: Path) -> None:
    tls = TlsSettings(certificate=tmp_path / "missing.pem", private_key=tmp_path / "missing.key")
    settings = DicomSettings(tls=tls)

    outcome = run_export(storage, settings, claimed(secure(), ["seg/seg.dcm"]), ClientTls(tls))

    assert outcome["ok"] is False
    assert outcome["retry_in"] is None
    assert outcome["reason"] == (
        "cannot send to destination 'SECURE' (AE 'PACS' at 127.0.0.1:4242) over TLS: "
        f"dicom.tls.certificate must name a readable PEM file, got '{tmp_path / 'missing.pem'}'"
    )


def test_a_tls_destination_gets_the_system_store_context_without_a_ca_file(
    storage: Storage,
) -> None:
    made = ClientTls(TlsSettings())

    context = made()

    assert context is made()  # made once, shared by the sends
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    assert context.minimum_version.name == "TLSv1_2"


def test_missing_results_are_reported_as_unreadable_results(storage: Storage) -> None:
    plain = DestinationConfig(name="PACS", ae_title="PACS", host="127.0.0.1", port=free_port())

    outcome = run_export(
        storage,
        DicomSettings(),
        claimed(plain, ["seg/seg.dcm"]),
        never_called,
    )

    assert outcome["ok"] is False and outcome["retry_in"] is None
    assert outcome["reason"].startswith(
        "cannot read the results of job job-1 to export: result seg/seg.dcm is missing"
    )


def test_an_unreachable_destination_is_retried_and_named(storage: Storage, tmp_path: Path) -> None:
    files = write_ct_series(generate_phantom(slices=1, rows=16, columns=16), tmp_path / "ct")
    storage.write_bytes(result_path(storage, "job-1", "seg/a.dcm"), files[0].read_bytes())
    port = free_port()
    plain = DestinationConfig(name="PACS", ae_title="PACS", host="127.0.0.1", port=port)

    outcome = run_export(
        storage,
        DicomSettings(),
        claimed(plain, ["seg/a.dcm"]),
        never_called,
    )

    assert outcome["ok"] is False and outcome["retry_in"] == 2.0
    assert outcome["reason"].startswith(
        f"destination 'PACS' (AE 'PACS' at 127.0.0.1:{port}): unreachable"
    )
