"""No patient data in any log: Ray's session logs and the platform's job logs, after every
reference pipeline, and an operator that copies patient attributes, have run on a study
whose patient data pydicom finds invalid."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import pydicom
import pytest
import ray
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset

from clara_ray.context import OperatorContext
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import PayloadView
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Values no other test uses: the grep sees every test's logs in the shared session.
PATIENT_NAME = "Zyxwvut^Qerty"
PATIENT_ID = "QX-5581-ZYXW"
# The ACR-NEMA form: pydicom reads it as a date, but reports it invalid, quoting it.
BIRTH_DATE = "1971.03.13"
RENDERINGS = ("Zyxwvut", "Qerty", PATIENT_ID, BIRTH_DATE, "19710313", "1971-03-13")
PIPELINES = ("ct-lung-bone.yaml", "ct-liver-ai.yaml", "deidentify-and-forward.yaml")
COPY_PATIENT = """
api-version: 0.4.0
name: copy-patient
parameters: {destination: none}
operators:
  - name: copy
    run: tests.integration.test_no_phi_in_logs:copy_patient_attributes
    input: [{name: payload}]
"""


def copy_patient_attributes(ctx: OperatorContext, payload: PayloadView) -> dict[str, Any]:
    """An operator building a header from the source's patient attributes as text, as a
    writer of derived objects may: pydicom validates (and reports) each value assigned."""
    for name in payload.files():
        with payload.open(name) as fp:
            source = pydicom.dcmread(fp, stop_before_pixels=True)
        header = Dataset()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
            setattr(header, keyword, str(source.get(keyword, "")))
    return {}


def _files_mentioning(folder: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """For every file under ``folder`` holding one of ``needles``: which ones."""
    hits: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_bytes()
        except OSError:  # a socket or a file Ray removed meanwhile
            continue
        found = [n for n in needles if n.encode() in text]
        if found:
            hits[str(path)] = found
    return hits


def test_reference_pipelines_log_no_patient_data(platform, settings, tmp_path: Path) -> None:
    study = tmp_path / "study"
    phantom = generate_phantom(slices=40, rows=256, columns=256, spacing=(2.5, 1.4, 1.4), seed=5)
    with disable_value_validation():  # writing the invalid date would warn here, in the test
        write_ct_series(
            phantom,
            study,
            patient_name=PATIENT_NAME,
            patient_id=PATIENT_ID,
            patient_birth_date=BIRTH_DATE,
        )
    (tmp_path / "copy-patient.yaml").write_text(dedent(COPY_PATIENT))
    pipelines = [str(ROOT / "pipelines" / p) for p in PIPELINES] + [
        str(tmp_path / "copy-patient.yaml")
    ]
    for pipeline in pipelines:
        job = platform.create_job(
            pipeline,
            str(study),
            parameters={"destination": "none"},
            start=True,
        )
        described = platform.wait_job(job.job_id, timeout=300)
        assert (described["state"], described["status"]) == ("Stopped", "Healthy"), (
            pipeline,
            described["reason"],
        )

    node = ray._private.worker._global_node
    assert node is not None
    session_logs = Path(node.get_session_dir_path()) / "logs"
    platform_logs = Path(settings.storage) / "logs"
    assert any(platform_logs.rglob("*.log")), "the operators' logs were written"
    assert _files_mentioning(session_logs, RENDERINGS) == {}
    assert _files_mentioning(platform_logs, RENDERINGS) == {}
