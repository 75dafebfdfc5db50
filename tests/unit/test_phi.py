"""The log hygiene every platform process starts with: pydicom quotes no value in its logs."""

from __future__ import annotations

import subprocess
import sys
from textwrap import dedent

from tests.conftest import ROOT

VALUE = "1971.03.13"  # an invalid DA: pydicom reports it, quoting it
SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG)  # as the platform's actors configure logging
if sys.argv[1] == "hygiene":
    from clara_ray.phi import keep_patient_data_out_of_logs
    keep_patient_data_out_of_logs()
from pydicom.dataset import Dataset
from pydicom.valuerep import DS
ds = Dataset()
ds.PatientBirthDate = "1971.03.13"
DS("1_5")  # float() reads it; DS does not allow it
logging.getLogger("pydicom.pixels").warning("element value %s", "1971.03.13")
print("done")
"""


def _stderr(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", dedent(SCRIPT), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "done"
    return done.stderr


def test_pydicom_value_reports_quote_values_without_the_hygiene() -> None:
    stderr = _stderr("plain")
    assert f"Invalid value for VR DA: '{VALUE}'" in stderr  # the warning and the record
    assert "1_5" in stderr


def test_hygiene_keeps_pydicom_value_reports_out_of_stderr() -> None:
    stderr = _stderr("hygiene")
    assert VALUE not in stderr
    assert "1_5" not in stderr
