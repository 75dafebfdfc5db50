"""Series selection rules: validation, matching, and the select_series operator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

from clara_ray.context import OperatorContext
from clara_ray.errors import SeriesError
from clara_ray.operators.series_selector import (
    SeriesCandidate,
    SeriesSelector,
    scan_series,
    select_series,
)
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage

SELECTOR_LOG = "clara_ray.operators.series_selector"
THIN, THICK, MR = (generate_uid() for _ in range(3))


def _header(**attributes: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in {
        "Modality": "CT",
        "SeriesDescription": "Chest 2.5mm",
        "SliceThickness": "2.50",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "PixelSpacing": ["0.7", "0.7"],
        "PatientName": "SECRET^NAME",
        **attributes,
    }.items():
        if value is None:
            continue
        setattr(ds, keyword, value)
    return ds


def _mismatch(conditions: dict[str, Any], **attributes: Any) -> str | None:
    selector = SeriesSelector([{"name": "r", "conditions": conditions}])
    return selector.rules[0].mismatch(_header(**attributes))


# -- rule validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "error", "message"),
    [
        ([], ValueError, "must be a non-empty list"),
        ("CT", ValueError, "must be a non-empty list"),
        ({"rules": []}, ValueError, r"single key 'selections' .* got keys \['rules'\]"),
        (["CT"], TypeError, "selection rule 1 must be a mapping"),
        ([{"name": "a", "when": {}}], ValueError, r"selection rule 1: unknown key\(s\) \['when'\]"),
        ([{"name": ""}], ValueError, "name must be a non-empty string"),
        ([{"conditions": ["Modality"]}], ValueError, "conditions must map DICOM keywords"),
        (
            [{"name": "ct", "conditions": {"Modalty": "CT"}}],
            ValueError,
            r"rule 1 \('ct'\): 'Modalty' is not a DICOM attribute keyword",
        ),
        (
            [{"conditions": {"SliceThickness": {"below": 3}}}],
            ValueError,
            r"SliceThickness: unknown condition key\(s\) \['below'\]; expected some of equals",
        ),
        ([{"conditions": {"SliceThickness": {}}}], ValueError, "empty condition"),
        ([{"conditions": {"SliceThickness": {"min": "1"}}}], ValueError, "min must be a number"),
        ([{"conditions": {"SliceThickness": {"max": True}}}], ValueError, "max must be a number"),
        ([{"conditions": {"SliceThickness": {"min": 3, "max": 1}}}], ValueError, "min 3 is above"),
        ([{"conditions": {"SeriesDescription": {"regex": "("}}}], ValueError, "regex '\\(' is"),
        ([{"conditions": {"SeriesDescription": {"regex": 1}}}], ValueError, "must be a string"),
        ([{"conditions": {"Modality": []}}], ValueError, "non-empty list of them"),
        ([{"conditions": {"Modality": [{"a": 1}]}}], ValueError, "string or number"),
        ([{"conditions": {"Modality": {"present": "yes"}}}], ValueError, "true or false"),
    ],
)
def test_invalid_rules_are_refused(rules: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SeriesSelector(rules)


def test_monai_layout_and_default_names() -> None:
    selector = SeriesSelector({"selections": [{"conditions": {"Modality": "CT"}}, {}]})
    assert [r.name for r in selector.rules] == ["rule 1", "rule 2"]
    assert selector.rules[1].conditions == ()


# -- conditions ----------------------------------------------------------------------------------


def test_values_compare_without_case_and_numbers_numerically() -> None:
    assert _mismatch({"Modality": "ct"}) is None
    assert _mismatch({"SliceThickness": 2.5}) is None
    assert _mismatch({"Modality": "MR"}) == "Modality 'CT' is not one of ['MR']"
    assert _mismatch({"Modality": ["MR", "CT"]}) is None
    assert _mismatch({"Modality": {"in": ["MR"], "equals": "PT"}}) == (
        "Modality 'CT' is not one of ['PT', 'MR']"
    )
    assert _mismatch({"ImageType": "primary"}) is None  # one of the values


def test_regex_searches_the_value() -> None:
    assert _mismatch({"SeriesDescription": {"regex": "(?i)chest"}}) is None
    assert _mismatch({"SeriesDescription": {"regex": "^Lung"}}) == (
        "SeriesDescription 'Chest 2.5mm' does not match regex '^Lung'"
    )
    assert _mismatch({"ImageType": {"regex": r"ORIGINAL\\PRIMARY"}}) is None


def test_numeric_ranges() -> None:
    assert _mismatch({"SliceThickness": {"min": 1, "max": 3}}) is None
    assert _mismatch({"SliceThickness": {"max": 2}}) == "SliceThickness '2.50' is above max 2"
    assert _mismatch({"SliceThickness": {"min": 3}}) == "SliceThickness '2.50' is below min 3"
    assert _mismatch({"PixelSpacing": {"max": 0.8}}) is None  # every value
    assert _mismatch({"PixelSpacing": {"max": 0.6}}) == (
        "PixelSpacing ['0.7', '0.7'] is above max 0.6"
    )
    assert _mismatch({"SeriesDescription": {"min": 1}}) == (
        "SeriesDescription 'Chest 2.5mm' is not numeric"
    )


def test_contains_and_presence() -> None:
    assert _mismatch({"ImageType": {"contains": ["ORIGINAL", "primary"]}}) is None
    assert _mismatch({"ImageType": {"contains": ["DERIVED"]}}) == (
        "ImageType ['ORIGINAL', 'PRIMARY', 'AXIAL'] lacks ['DERIVED']"
    )
    assert _mismatch({"ContrastBolusAgent": {"present": False}}) is None
    assert _mismatch({"ContrastBolusAgent": "IODINE"}) == "ContrastBolusAgent is absent"
    assert _mismatch({"SeriesDescription": {"present": True}}) is None
    assert _mismatch({"SeriesDescription": {"present": False}}) == "SeriesDescription is present"
    assert _mismatch({"SeriesDescription": "x"}, SeriesDescription="") == (
        "SeriesDescription is absent"
    )


def test_patient_values_are_withheld_from_messages() -> None:
    reason = _mismatch({"PatientName": "OTHER^NAME"})
    assert reason == "PatientName (value withheld) is not one of ['OTHER^NAME']"


def test_first_rule_wins_then_most_files() -> None:
    thin = SeriesCandidate(THIN, _header(), ("a", "b", "c"))
    thick = SeriesCandidate(THICK, _header(SliceThickness="5"), ("d", "e"))
    mr = SeriesCandidate(MR, _header(Modality="MR"), ("f",) * 9)
    selector = SeriesSelector(
        [
            {"name": "thick", "conditions": {"SliceThickness": {"min": 4}}},
            {"name": "ct", "conditions": {"Modality": "CT"}},
        ]
    )
    assert selector.select([thin, thick, mr]) == (selector.rules[0], thick)
    rule, chosen = selector.select([thin, mr])
    assert (rule.name, chosen) == ("ct", thin)
    any_ct = SeriesSelector([{"conditions": {"Modality": "CT"}}])
    assert any_ct.select([thick, thin])[1] is thin


def test_no_match_names_every_rule_and_series() -> None:
    selector = SeriesSelector(
        [
            {"name": "pet", "conditions": {"Modality": "PT"}},
            {"name": "thin", "conditions": {"SliceThickness": {"max": 1}}},
        ]
    )
    candidates = [SeriesCandidate(THIN, _header(), ("a",))]
    with pytest.raises(SeriesError) as info:
        selector.select(candidates)
    message = str(info.value)
    assert message.startswith("no series matches the selection rules: rule 'pet': series ")
    assert f"series {THIN} (CT, 1 files): Modality 'CT' is not one of ['PT']" in message
    assert "rule 'thin': " in message and "is above max 1" in message
    with pytest.raises(SeriesError, match="rule 'pet': no image series at all"):
        selector.select([])


# -- the operator on a payload -------------------------------------------------------------------


def _text_sr(path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def payload_ctx(tmp_path_factory: pytest.TempPathFactory) -> OperatorContext:
    root = tmp_path_factory.mktemp("selector")
    study = generate_uid()
    thin = generate_phantom(slices=12, rows=32, columns=32, spacing=(2.5, 1.0, 1.0), seed=1)
    thick = generate_phantom(slices=6, rows=32, columns=32, spacing=(5.0, 1.0, 1.0), seed=2)
    data = root / "data"
    write_ct_series(
        thin, data / "thin", study_uid=study, series_uid=THIN, series_description="Chest 2.5mm"
    )
    write_ct_series(
        thick,
        data / "thick",
        study_uid=study,
        series_uid=THICK,
        series_description="Chest 5mm",
        series_number=2,
    )
    for path in (
        data / "thick"
    ).iterdir():  # make the thick series look like MR to test modality rules
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path, enforce_file_format=True)
    _text_sr(data / "report.dcm")
    (data / "notes.txt").write_text("not DICOM")
    storage = Storage(str(root / "storage"))
    storage.upload_payload("p1", data)
    storage.seal_payload("p1")
    payload = storage.payload_view("p1")
    return OperatorContext(
        "job-1", "test", "test", "select", payload, storage.results("job-1", "select")
    )


def test_scan_finds_the_image_series_and_skips_the_rest(
    payload_ctx: OperatorContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=SELECTOR_LOG):
        found = scan_series(payload_ctx.payload.iter_files())
    assert {c.series_instance_uid: len(c.files) for c in found} == {THIN: 12, THICK: 6}
    assert "skipping notes.txt: not a DICOM file" in caplog.text
    assert "skipping report.dcm (Basic Text SR Storage): not a positioned image" in caplog.text


def test_select_series_loads_the_chosen_series(payload_ctx: OperatorContext) -> None:
    rules = [
        {"name": "thick MR", "conditions": {"Modality": "MR", "SliceThickness": {"min": 4}}},
        {"name": "any CT", "conditions": {"Modality": "CT"}},
    ]
    volume = select_series(payload_ctx, payload_ctx.payload, rules=rules)["volume"]
    assert volume.source.series_instance_uid == THICK
    assert volume.shape == (6, 32, 32)
    assert volume.spacing[0] == pytest.approx(5.0)
    volume = select_series(payload_ctx, payload_ctx.payload, rules=rules[1:])["volume"]
    assert volume.source.series_instance_uid == THIN
    assert volume.shape == (12, 32, 32)
    assert np.array_equal(
        volume.array,
        generate_phantom(slices=12, rows=32, columns=32, spacing=(2.5, 1.0, 1.0), seed=1).hu,
    )
    regex = [{"conditions": {"SeriesDescription": {"regex": "^Chest 5mm$"}}}]
    assert select_series(payload_ctx, payload_ctx.payload, rules=regex)["volume"].shape[0] == 6


def test_select_series_without_match_names_the_payload_and_rules(
    payload_ctx: OperatorContext,
) -> None:
    rules = [{"name": "pet", "conditions": {"Modality": "PT"}}]
    with pytest.raises(
        SeriesError, match=r"payload p1: no series matches the selection rules: rule 'pet'"
    ):
        select_series(payload_ctx, payload_ctx.payload, rules=rules)
    with pytest.raises(ValueError, match="'Modalty' is not a DICOM attribute keyword"):
        select_series(payload_ctx, payload_ctx.payload, rules=[{"conditions": {"Modalty": "CT"}}])
