"""De-identified CT against dicom3tools: dciodvfy per file, dcentvfy for the series."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import RLELossless

from clara_ray.context import OperatorContext
from clara_ray.operators.deidentify import deidentify
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from tests.peer.dicom3tools import assert_consistent, assert_valid

pytestmark = pytest.mark.peer


def _deidentified(tmp_path: Path, **series: object) -> list[Path]:
    write_ct_series(
        generate_phantom(slices=10, rows=32, columns=32, seed=2),
        tmp_path / "study",
        patient_name="DOE^JANE",
        patient_id="MRN-0042",
        patient_birth_date="19620714",
        **series,  # type: ignore[arg-type]
    )
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p", tmp_path / "study")
    storage.seal_payload("p")
    ctx = OperatorContext(
        job_id="j",
        job_name="deid",
        pipeline="deidentify-and-forward",
        operator="deidentify",
        payload=storage.payload_view("p"),
        results=storage.results("j", "deidentify"),
    )
    files = deidentify(ctx, ctx.payload, salt="peer-test-salt-0123456789")["files"]
    root = Path(storage.results_root("j"))
    return [root / f for f in files]


@pytest.mark.parametrize("series", [{}, {"transfer_syntax": RLELossless}], ids=["explicit", "rle"])
def test_deidentified_ct_passes_dciodvfy_and_dcentvfy(
    tmp_path: Path, series: dict[str, object]
) -> None:
    paths = _deidentified(tmp_path, **series)
    assert len(paths) == 10
    for path in paths:
        assert_valid(path)
    assert_consistent(paths)
