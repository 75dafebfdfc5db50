"""The DICOM adapter end to end: dcmtk senders -> adapter -> payload -> job -> export -> Orthanc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import ray

from clara_ray.dicom.actors import get_or_create_adapter
from clara_ray.sample import generate_phantom, write_ct_series
from tests.conftest import ROOT, free_port, make_settings, wait_for
from tests.peer.dicom_helpers import DCMTK_ENV
from tests.peer.orthanc import OrthancServer, orthanc_fixture

pytestmark = [pytest.mark.ray, pytest.mark.peer, pytest.mark.slow]
orthanc = orthanc_fixture()


@pytest.fixture
def settings(tmp_path: Path):
    """The test's settings, with a DICOM listener on a free port (overrides conftest's)."""
    return make_settings(
        tmp_path,
        CLARA_RAY_DICOM__PORT=str(free_port()),
        CLARA_RAY_DICOM__RECEIVERS="2",
        CLARA_RAY_DICOM__DISK_RESERVE_MB="0",
        CLARA_RAY_DICOM__REJECT_UNKNOWN_SOURCES="false",
        CLARA_RAY_DICOM__EXPORT__BACKOFF_SECONDS="1",
        CLARA_RAY_DICOM__EXPORT__ATTEMPTS="20",
    )


@pytest.fixture
def adapter(platform, settings):
    handle = get_or_create_adapter(settings)
    ray.get(handle.status.remote(), timeout=120)
    return handle


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, list[str]]:
    phantom = generate_phantom(slices=16, rows=128, columns=128, spacing=(2.5, 2.8, 2.8), seed=5)
    files = write_ct_series(phantom, tmp_path / "study")
    return tmp_path / "study", [
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
    ]


def storescu(
    settings, folder: Path, called: str = "CLARA", calling: str = "MODALITY"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling,
            "-aec",
            called,
            "127.0.0.1",
            str(settings.dicom.port),
            "+sd",
            str(folder),
        ],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def configure(platform, pipeline: str, timeout: float = 2.0, destination=None) -> None:
    platform.create_pipeline(ROOT / "pipelines" / pipeline)
    name = platform.core.get_pipeline(pipeline.removesuffix(".yaml")).name
    if destination is not None:
        platform.core.dicom_put("destination", destination.model_dump())
    platform.core.dicom_put(
        "aetitle", {"ae_title": "CLARA", "pipelines": [name], "timeout": timeout}
    )


def jobs_of(platform) -> list:
    return platform.core.list_jobs()


def test_study_from_storescu_reaches_orthanc_as_seg_and_sr(
    platform, adapter, settings, study, orthanc
):
    folder, sop_uids = study
    configure(platform, "ct-lung-bone.yaml", destination=orthanc.destination("PACS"))
    wait_for(lambda: ray.get(adapter.status.remote())["aetitles"] == ["CLARA"], 30, "config reload")
    echo = subprocess.run(
        ["echoscu", "-aec", "CLARA", "127.0.0.1", str(settings.dicom.port)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert echo.returncode == 0, echo.stderr
    sent = storescu(settings, folder)
    assert sent.returncode == 0, sent.stderr

    job = wait_for(lambda: next(iter(jobs_of(platform)), None), what="the job")
    assert job.name.startswith("CLARA-ct-lung-bone-")
    described = platform.wait_job(job.job_id, timeout=300)
    assert described["status"] == "Healthy", described["reason"]
    payload = platform.core.get_payload(described["payload_id"])
    assert payload.files == len(sop_uids)

    def exported() -> list:
        exports = platform.core.list_exports(job.job_id)
        return exports if exports and all(e.state == "Succeeded" for e in exports) else []

    exports = wait_for(exported, 120, "the export to succeed")
    assert [(e.destination, e.sent) for e in exports] == [("PACS", 2)]
    results = {r["path"] for r in described["results"]}
    expected = {
        str(
            pydicom.dcmread(
                Path(settings.storage) / "results" / job.job_id / p, stop_before_pixels=True
            ).SOPInstanceUID
        )
        for p in ("seg/seg.dcm", "sr/sr.dcm")
        if p in results
    }
    assert len(expected) == 2
    assert expected <= orthanc.sop_instance_uids()


def test_twenty_concurrent_senders_make_one_payload_and_one_job(platform, adapter, settings, study):
    folder, sop_uids = study
    configure(platform, "ct-lung-bone.yaml", timeout=3.0)
    wait_for(lambda: ray.get(adapter.status.remote())["aetitles"] == ["CLARA"], 30, "config reload")
    senders = [
        subprocess.Popen(
            [
                "storescu",
                "-aec",
                "CLARA",
                "127.0.0.1",
                str(settings.dicom.port),
                "+sd",
                str(folder),
            ],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(20)
    ]
    assert [p.wait(timeout=180) for p in senders] == [0] * 20
    job = wait_for(lambda: next(iter(jobs_of(platform)), None), what="the job")
    time.sleep(4)  # longer than the group timeout: a second group would have closed by now
    assert len(jobs_of(platform)) == 1
    payload = platform.core.get_payload(job.payload_id)
    assert payload.files == len(sop_uids)


def test_a_slow_sender_on_one_association_makes_one_payload_and_one_job(
    platform, adapter, settings, study
):
    from tests.peer.dicom_helpers import NODELAY_HANDLERS, scu_ae

    folder, sop_uids = study
    configure(platform, "ct-lung-bone.yaml", timeout=2.0)
    wait_for(lambda: ray.get(adapter.status.remote())["aetitles"] == ["CLARA"], 30, "config reload")
    files = sorted(folder.iterdir())
    assoc = scu_ae("SLOWCT").associate(
        "127.0.0.1", settings.dicom.port, ae_title="CLARA", evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    try:
        for i, path in enumerate(files):
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
            if i in (0, len(files) // 2):
                time.sleep(4.5)  # quieter than the AE title's 2 s timeout, twice
    finally:
        assoc.release()
    job = wait_for(lambda: next(iter(jobs_of(platform)), None), what="the job")
    time.sleep(4)  # longer than the group timeout: a second group would have closed by now
    assert len(jobs_of(platform)) == 1
    payload = platform.core.get_payload(job.payload_id)
    assert payload.files == len(sop_uids)


def test_adapter_killed_after_success_loses_nothing_and_creates_one_job(
    platform, adapter, settings, study
):
    folder, sop_uids = study
    configure(platform, "ct-lung-bone.yaml", timeout=4.0)
    wait_for(lambda: ray.get(adapter.status.remote())["aetitles"] == ["CLARA"], 30, "config reload")
    pids = ray.get(adapter.pids.remote())
    sent = storescu(settings, folder)
    assert sent.returncode == 0, sent.stderr  # every instance was answered with Success
    for pid in pids:  # the adapter and its receivers, before the group's timeout closes it
        os.kill(pid, signal.SIGKILL)

    job = wait_for(lambda: next(iter(jobs_of(platform)), None), 180, "the job after the restart")
    assert ray.get(adapter.pids.remote())[0] not in pids  # a restarted adapter made it
    described = platform.wait_job(job.job_id, timeout=300)
    assert described["status"] == "Healthy", described["reason"]
    payload = platform.core.get_payload(job.payload_id)
    assert payload.files == len(sop_uids)
    time.sleep(3)
    assert len(jobs_of(platform)) == 1


def test_export_is_retried_until_the_destination_comes_up(
    platform, adapter, settings, study, tmp_path
):
    folder, _ = study
    port = free_port()
    pacs = OrthancServer(tmp_path / "late-orthanc", config={"DicomPort": port})
    from clara_ray.config.dicom import DestinationConfig

    configure(
        platform,
        "ct-lung-bone.yaml",
        destination=DestinationConfig(name="PACS", ae_title="ORTHANC", host="127.0.0.1", port=port),
    )
    wait_for(lambda: ray.get(adapter.status.remote())["aetitles"] == ["CLARA"], 30, "config reload")
    assert storescu(settings, folder).returncode == 0
    job = wait_for(lambda: next(iter(jobs_of(platform)), None), what="the job")
    assert platform.wait_job(job.job_id, timeout=300)["status"] == "Healthy"

    def failed_attempt() -> list:
        exports = platform.core.list_exports(job.job_id)
        retrying = exports and exports[0].attempts >= 1 and exports[0].state == "Pending"
        return exports if retrying and exports[0].reason else []

    first = wait_for(failed_attempt, 60, "a failed export attempt")
    assert "destination 'PACS'" in first[0].reason and "unreachable" in first[0].reason
    try:
        pacs.start()
        done = wait_for(
            lambda: [e for e in platform.core.list_exports(job.job_id) if e.state == "Succeeded"],
            120,
            "the export to succeed after the destination came up",
        )
        assert done[0].attempts >= 2
        assert len(pacs.sop_instance_uids()) == 2
    finally:
        pacs.stop()
