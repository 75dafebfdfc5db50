"""A real PACS (Orthanc) accepts the SEG and SR the operators write, next to their source series."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clara_ray.operators.dicom_seg import write_seg
from clara_ray.operators.dicom_sr import write_sr
from clara_ray.operators.measurements import measure_segments
from tests.derived_helpers import make_case

pytestmark = pytest.mark.peer

ORTHANC = "/usr/sbin/Orthanc"
_START_DEADLINE_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/dicom"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[str]:
    """A fresh Orthanc on free ports; its base URL.  Always stopped afterwards."""
    if not (Path(ORTHANC).exists() or shutil.which("Orthanc")):
        pytest.fail(f"{ORTHANC} is not installed (Debian package orthanc)")
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "TESTPACS",
        "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomAssociationCloseDelay": 0,
    }
    config_path = tmp_path / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [ORTHANC if Path(ORTHANC).exists() else "Orthanc", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            try:
                _get(f"{base}/system")
                break
            except (urllib.error.URLError, ConnectionError) as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    text = (tmp_path / "orthanc.log").read_text(errors="replace")
                    pytest.fail(f"Orthanc did not come up on {base}: {exc}\n{text[-3000:]}")
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_orthanc_accepts_seg_and_sr(tmp_path: Path, orthanc: str) -> None:
    case = make_case(tmp_path, "oblique")
    measurements = measure_segments(case.context("measure"), case.labels, case.volume)
    seg_files = write_seg(case.context("seg"), case.labels)["seg_files"]
    sr_files = write_sr(case.context("sr"), measurements["measurements"], seg_files, case.labels)[
        "sr_files"
    ]
    probability = case.phantom.labels["liver"].astype(np.float32) * np.float32(0.9)
    fractional = write_seg(
        case.context("seg-ai"),
        case.volume.with_array(probability, segments=[{"label": 1, "name": "liver"}]),
        algorithm_family="ArtificialIntelligence",
        fractional=True,
    )["seg_files"]

    for path in case.files:
        status, _ = _post(f"{orthanc}/instances", path.read_bytes())
        assert status == 200
    for path in (*seg_files, *sr_files, *fractional):
        status, answer = _post(f"{orthanc}/instances", Path(path).read_bytes())
        assert status == 200, f"{Path(path).name}: HTTP {status}: {answer}"
        assert answer["Status"] == "Success", answer

    assert len(_get(f"{orthanc}/studies")) == 1  # derived objects joined the source study
    modalities = sorted(
        _get(f"{orthanc}/series/{s}")["MainDicomTags"]["Modality"]
        for s in _get(f"{orthanc}/series")
    )
    assert modalities == ["CT", "SEG", "SEG", "SR"]
