"""De-identified CT against dicom3tools: dciodvfy per file, dcentvfy for the series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless

from clara_ray.context import OperatorContext
from clara_ray.operators.deidentify import deidentify
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from tests.peer.dicom3tools import assert_consistent, assert_valid, run_tool

pytestmark = pytest.mark.peer


def _deidentified(
    tmp_path: Path, *, edit: Callable[[Dataset], None] | None = None, **series: object
) -> list[Path]:
    paths = write_ct_series(
        generate_phantom(slices=10, rows=32, columns=32, seed=2),
        tmp_path / "study",
        patient_name="DOE^JANE",
        patient_id="MRN-0042",
        patient_birth_date="19620714",
        **series,  # type: ignore[arg-type]
    )
    if edit is not None:
        for path in paths:
            ds = pydicom.dcmread(path)
            edit(ds)
            ds.save_as(path, enforce_file_format=True)
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
    tmp_path: Path, series: dict[str, Any]
) -> None:
    paths = _deidentified(tmp_path, **series)
    assert len(paths) == 10
    for path in paths:
        assert_valid(path)
    assert_consistent(paths)


def _add_report_text(ds: Dataset) -> None:
    """Free text and a content tree, as some modalities and PACS add to images."""
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "DOE^JANE, MRN-0042"
    ds.ContentSequence = Sequence([item])
    ds.TextValue = "DOE^JANE"
    ds.InterpretationText = "seen by DOE^JANE's physician"


def test_deidentified_ct_with_report_text_keeps_none_and_passes_dciodvfy(tmp_path: Path) -> None:
    paths = _deidentified(tmp_path, edit=_add_report_text)
    assert len(paths) == 10
    for path in paths:
        assert_valid(path)
        _rc, output = run_tool("dciodvfy", [path])
        for name in ("Content Sequence", "Text Value", "Interpretation Text"):
            assert name not in output, f"{name} kept in {path.name}:\n{output}"
    assert_consistent(paths)
