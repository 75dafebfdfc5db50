"""TID 1500 measurement report: building with highdicom and the write_sr operator."""

from __future__ import annotations

import io
import logging
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from clara_ray.derived import build_measurement_report, build_segmentation
from clara_ray.operators.dicom_seg import write_seg
from clara_ray.operators.dicom_sr import SR_FILE, write_sr
from clara_ray.operators.measurements import measure, measure_segments
from tests.derived_helpers import GEOMETRIES, Case, make_case

SR_LOG = "clara_ray.derived"


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("axial"), "axial")


def _reread(sr: pydicom.Dataset) -> hd.sr.Comprehensive3DSR:
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return hd.sr.srread(buffer)


def _pipeline(case: Case) -> tuple[dict[str, Any], pydicom.Dataset, hd.sr.Comprehensive3DSR]:
    """measure -> write_seg -> write_sr through the operators; returns measurements, SEG, SR."""
    measurements = measure_segments(case.context("measure"), case.labels, case.volume)
    seg_files = write_seg(case.context("seg"), case.labels, algorithm_name="thresholds")
    ctx = case.context("sr")
    out = write_sr(ctx, measurements["measurements"], seg_files["seg_files"], case.labels)
    assert out == {"sr_files": [ctx.results.path(SR_FILE)]}
    seg = pydicom.dcmread(io.BytesIO(case.context("seg").results.read_bytes("seg.dcm")))
    sr = hd.sr.srread(io.BytesIO(ctx.results.read_bytes(SR_FILE)))
    return measurements["measurements"], seg, sr


def test_report_measures_every_segment(case: Case) -> None:
    measurements, seg, sr = _pipeline(case)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert (sr.StudyInstanceUID, sr.PatientID) == (seg.StudyInstanceUID, seg.PatientID)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    seg_items = {str(i.SegmentLabel): i for i in seg.SegmentSequence}
    expected = {s["name"]: s for s in measurements["segments"] if s["voxel_count"]}
    assert len(groups) == len(expected) == len(seg_items)
    for group in groups:
        reference = group.referenced_segment
        item = seg_items[str(group.tracking_identifier)]
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_segment_numbers == [item.SegmentNumber]
        assert group.tracking_uid == item.TrackingUID
        assert group.finding_type.value == item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        entry = expected[str(item.SegmentLabel)]
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(entry["volume_ml"], rel=1e-6)
        assert (volume.unit.value, volume.unit.scheme_designator) == ("ml", "UCUM")
        hu = {
            m.derivation.value: m
            for m in group.get_measurements(name=codes.DCM.AttenuationCoefficient)
        }
        assert hu[codes.SCT.Mean.value].value == pytest.approx(entry["hu"]["mean"], abs=1e-3)
        assert hu[codes.SCT.Mean.value].unit.value == "[hnsf'U]"
        assert hu[codes.SCT.StandardDeviation.value].value == pytest.approx(
            entry["hu"]["std"], abs=1e-3
        )
        assert len(hu) == 5


def test_observer_is_the_algorithm_device(axial: Case) -> None:
    _, _, sr = _pipeline(axial)
    (observer,) = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)
    attributes = observer.observer_identifying_attributes
    assert attributes.name == "thresholds"
    procedure = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"
    )
    assert procedure.ConceptCodeSequence[0].CodeValue == codes.LN.CTUnspecifiedBodyRegion.value


def test_evidence_lists_the_seg_and_the_source_series(axial: Case) -> None:
    _, seg, sr = _pipeline(axial)
    referenced = {
        (series.SeriesInstanceUID, item.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    source = axial.volume.source
    expected = {(source.series_instance_uid, i.sop_instance_uid) for i in source.instances}
    expected.add((seg.SeriesInstanceUID, seg.SOPInstanceUID))
    assert referenced == expected


def test_empty_segments_are_left_out(axial: Case, caplog: pytest.LogCaptureFixture) -> None:
    labels = axial.labels.with_array(
        axial.labels.array,
        segments=[*axial.labels.metadata["segments"], {"label": 9, "name": "tumour"}],
    )
    seg = build_segmentation(labels, axial.headers(), algorithm_name="a", algorithm_version="1")
    with caplog.at_level(logging.INFO, logger=SR_LOG):
        sr = _reread(build_measurement_report(seg, measure(labels, axial.volume), axial.headers()))
    assert "segment 'tumour' is empty" in caplog.text
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == 4


def test_uid_seed_and_algorithm_override(axial: Case) -> None:
    seg = build_segmentation(
        axial.labels, axial.headers(), algorithm_name="a", algorithm_version="1"
    )
    args = (seg, measure(axial.labels, axial.volume), axial.headers())
    one = build_measurement_report(
        *args, uid_seed="s", algorithm_name="other", algorithm_version="2"
    )
    two = build_measurement_report(*args, uid_seed="s", series_number=7)
    assert one.SOPInstanceUID == two.SOPInstanceUID
    assert two.SeriesNumber == 7
    observers = _reread(one).content.get_observer_contexts()
    assert {o.observer_identifying_attributes.name for o in observers} == {"other"}


def test_non_ct_source_has_no_hu(axial: Case, caplog: pytest.LogCaptureFixture) -> None:
    headers = axial.headers()
    for h in headers:
        h.Modality = "MR"
    seg = build_segmentation(axial.labels, headers, algorithm_name="a", algorithm_version="1")
    with caplog.at_level(logging.INFO, logger=SR_LOG):
        sr = _reread(build_measurement_report(seg, measure(axial.labels, axial.volume), headers))
    assert "HU statistics are left out" in caplog.text
    for group in sr.content.get_volumetric_roi_measurement_groups():
        assert group.get_measurements(name=codes.DCM.AttenuationCoefficient) == []


def test_mismatches_are_refused(axial: Case) -> None:
    headers = axial.headers()
    seg = build_segmentation(axial.labels, headers, algorithm_name="a", algorithm_version="1")
    measurements = measure(axial.labels, axial.volume)
    with pytest.raises(ValueError, match="must be a Segmentation Storage instance"):
        build_measurement_report(headers[0], measurements, headers)
    other = {**measurements, "series_instance_uid": "1.2.3"}
    with pytest.raises(ValueError, match=r"series_instance_uid'\] is 1.2.3, expected the source"):
        build_measurement_report(seg, other, headers)
    renamed = {**measurements, "segments": [{**measurements["segments"][0], "name": "spleen"}]}
    with pytest.raises(ValueError, match="segment 'spleen' has voxels but the SEG has no segment"):
        build_measurement_report(seg, renamed, headers)
    with pytest.raises(ValueError, match="source_datasets is empty"):
        build_measurement_report(seg, measurements, [])
    with pytest.raises(ValueError, match="no non-empty segment"):
        build_measurement_report(seg, {**measurements, "segments": []}, headers)


def test_write_sr_reads_only_this_jobs_results(axial: Case) -> None:
    measurements = measure(axial.labels, axial.volume)
    ctx = axial.context("sr")
    with pytest.raises(ValueError, match="exactly one SEG file"):
        write_sr(ctx, measurements, [], axial.labels)
    elsewhere = axial.context("seg", job_id="job-2").results.path("seg.dcm")
    with pytest.raises(ValueError, match="is not under this job's results"):
        write_sr(ctx, measurements, [elsewhere], axial.labels)
    sneaky = ctx.results.path("x").rsplit("/", 3)[0] + "/job-1/../job-2/seg/seg.dcm"
    with pytest.raises(ValueError, match="is not under this job's results"):
        write_sr(ctx, measurements, [sneaky], axial.labels)
