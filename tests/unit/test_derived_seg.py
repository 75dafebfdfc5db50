"""DICOM SEG: building with highdicom, reading back onto the source grid, the write_seg operator."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from clara_ray.derived import build_segmentation, segment_codes
from clara_ray.derived.codes import GENERIC, algorithm_family
from clara_ray.operators.dicom_seg import SEG_FILE, write_seg
from clara_ray.operators.segmentation import segment_ct
from tests.derived_helpers import (
    GEOMETRIES,
    Case,
    make_case,
    on_grid,
    seg_labels_on_grid,
    source_grid,
)

SEG_LOG = "clara_ray.derived"


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("axial"), "axial")


def _build(case: Case, **kwargs: object) -> hd.seg.Segmentation:
    args = {"algorithm_name": "test algorithm", "algorithm_version": "1.0", **kwargs}
    return build_segmentation(case.labels, case.headers(), **args)  # type: ignore[arg-type]


def _reread(seg: pydicom.Dataset) -> hd.seg.Segmentation:
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return hd.seg.segread(buffer)


# -- geometry: read back onto the source grid, voxel for voxel --------------------------------


def test_binary_seg_reads_back_voxel_for_voxel(case: Case) -> None:
    seg = _reread(_build(case))
    grid = source_grid(case)
    # Our volume's geometry agrees with highdicom's reading of the same files ...
    assert np.array_equal(on_grid(case.volume, case.volume.array, grid), grid.array)
    # ... and the SEG, placed by its own frame positions, gives back the label map.
    expected = on_grid(case.labels, case.labels.array, grid)
    assert np.array_equal(seg_labels_on_grid(seg, grid), expected)


def test_binary_seg_on_the_label_grid_directly(case: Case) -> None:
    seg = _reread(_build(case))
    grid = hd.Volume(np.zeros(case.labels.shape, np.uint8), case.labels.affine(), "PATIENT")
    assert np.array_equal(seg_labels_on_grid(seg, grid), case.labels.array)


def test_frames_reference_the_source_instance_at_their_position(case: Case) -> None:
    seg = _reread(_build(case))
    headers = {h.SOPInstanceUID: h for h in case.headers()}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        header = headers[source.ReferencedSOPInstanceUID]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose(position, header.ImagePositionPatient, atol=1e-4)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    first = case.headers()[0]
    assert np.allclose(orientation.ImageOrientationPatient, first.ImageOrientationPatient)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == case.volume.source.series_instance_uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
        headers
    )


def test_fractional_seg_reads_back_within_quantization(case: Case) -> None:
    rng = np.random.default_rng(0)
    liver = case.phantom.labels["liver"].astype(np.float32)
    probability = np.clip(liver * rng.uniform(0.5, 1.0, liver.shape), 0, 1).astype(np.float32)
    labels = case.volume.with_array(probability, segments=[{"label": 1, "name": "liver"}])
    seg = build_segmentation(
        labels,
        case.headers(),
        algorithm_name="liver-seg",
        algorithm_version="3",
        algorithm_family="ArtificialIntelligence",
        fractional=True,
    )
    back = _reread(seg)
    assert back.SegmentationType == "FRACTIONAL"
    assert back.SegmentationFractionalType == "PROBABILITY"
    grid = hd.Volume(np.zeros(labels.shape, np.float32), labels.affine(), "PATIENT")
    read = back.get_volume(dtype=np.float32).match_geometry(grid).array
    read = read[..., 0] if read.ndim == 4 else read
    assert np.abs(read - probability).max() <= 0.5 / 255 + 1e-6


def test_segment_ct_output_round_trips(axial: Case) -> None:
    labels = segment_ct(axial.context("segment"), axial.volume)["labels"]
    seg = _reread(
        build_segmentation(labels, axial.headers(), algorithm_name="t", algorithm_version="1")
    )
    grid = hd.Volume(np.zeros(labels.shape, np.uint8), labels.affine(), "PATIENT")
    combined = seg.get_volume(combine_segments=True).match_geometry(grid).array
    present = sorted(int(v) for v in np.unique(labels.array) if v)
    lut = np.zeros(max(present) + 1, np.uint8)
    for number, label in enumerate(present, start=1):
        lut[label] = number
    assert np.array_equal(combined, lut[labels.array])


# -- content: segments, codes, algorithm, patient/study ------------------------------------------


def test_segments_are_coded_and_identified(axial: Case) -> None:
    seg = _build(axial, series_number=42, series_description="My SEG")
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.SegmentationType == "BINARY"
    assert (seg.SeriesNumber, seg.SeriesDescription) == (42, "My SEG")
    items = seg.SegmentSequence
    assert [(i.SegmentNumber, i.SegmentLabel) for i in items] == [
        (1, "body"),
        (2, "lungs"),
        (3, "bone"),
        (4, "liver"),
    ]
    lungs = items[1]
    assert lungs.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert lungs.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Lung.value
    assert items[2].SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.Tissue.value
    for item in items:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "test algorithm"
        ident = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (ident.AlgorithmName, ident.AlgorithmVersion) == ("test algorithm", "1.0")
        family = ident.AlgorithmFamilyCodeSequence[0]
        assert family.CodeValue == codes.cid7162.MorphologicalOperations.value
        assert item.TrackingID == item.SegmentLabel
    source = axial.headers()[0]
    for keyword in ("StudyInstanceUID", "PatientID", "FrameOfReferenceUID", "AccessionNumber"):
        assert seg.get(keyword) == source.get(keyword), keyword
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID


def test_uid_seed_makes_uids_repeatable(axial: Case) -> None:
    a, b = _build(axial, uid_seed="job-7/seg"), _build(axial, uid_seed="job-7/seg")
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert [i.TrackingUID for i in a.SegmentSequence] == [i.TrackingUID for i in b.SegmentSequence]
    c = _build(axial)
    assert c.SOPInstanceUID != a.SOPInstanceUID


def test_only_present_labels_become_segments(axial: Case, caplog: pytest.LogCaptureFixture) -> None:
    array = np.zeros(axial.labels.shape, np.uint8)
    array[5:8, 20:30, 20:30] = 7
    array[10, 5:9, 5:9] = 3
    labels = axial.labels.with_array(array)  # legend names 1..4; 7 is unnamed
    with caplog.at_level(logging.INFO, logger=SEG_LOG):
        seg = build_segmentation(labels, axial.headers(), algorithm_name="a", algorithm_version="1")
    assert [(i.SegmentNumber, i.SegmentLabel) for i in seg.SegmentSequence] == [
        (1, "bone"),
        (2, "segment 7"),
    ]
    assert "labels [1, 2, 4] are empty" in caplog.text
    assert "label 7 is not named" in caplog.text
    assert "generic Tissue" in caplog.text
    unnamed = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert unnamed.CodeValue == GENERIC.type.value


def test_codes(caplog: pytest.LogCaptureFixture) -> None:
    assert segment_codes("Liver").type == codes.SCT.Liver
    assert segment_codes("body").type == codes.SCT.EntireBody
    assert segment_codes("bone").category == codes.SCT.Tissue
    with caplog.at_level(logging.INFO, logger=SEG_LOG):
        assert segment_codes("tumour") == GENERIC
    assert "segment 'tumour' has no coded anatomy" in caplog.text
    with pytest.raises(ValueError, match=r"algorithm_family must be one of .* got 'Magic'"):
        algorithm_family("Magic")


# -- errors ------------------------------------------------------------------------------------


def test_sources_in_another_order_are_refused(axial: Case) -> None:
    headers = axial.headers()[::-1]
    with pytest.raises(ValueError, match=r"source_datasets\[0\] is instance .* expected"):
        build_segmentation(axial.labels, headers, algorithm_name="a", algorithm_version="1")
    bare = replace(axial.labels, source=None)  # no UIDs to compare: positions must catch it
    with pytest.raises(ValueError, match="source instance 0 lies at"):
        build_segmentation(bare, headers, algorithm_name="a", algorithm_version="1")
    swapped = axial.headers()
    swapped[5], swapped[6] = swapped[6], swapped[5]
    with pytest.raises(ValueError, match=r"must follow labels' slice order.* datasets 5 and 6"):
        build_segmentation(bare, swapped, algorithm_name="a", algorithm_version="1")


def test_flipped_geometry_is_refused(axial: Case) -> None:
    d = np.asarray(axial.labels.direction)
    flipped = replace(axial.labels, direction=tuple(map(tuple, d * [-1, 1, -1])))
    with pytest.raises(
        ValueError, match=r"has ImageOrientationPatient .* expected labels' direction"
    ):
        build_segmentation(flipped, axial.headers(), algorithm_name="a", algorithm_version="1")
    shifted = replace(axial.labels, origin=tuple(np.asarray(axial.labels.origin) + 10 * d[:, 2]))
    with pytest.raises(ValueError, match=r"source instance 0 lies at .* expected labels' origin"):
        build_segmentation(shifted, axial.headers(), algorithm_name="a", algorithm_version="1")


def test_bad_inputs_are_refused(axial: Case) -> None:
    headers = axial.headers()
    kw = {"algorithm_name": "a", "algorithm_version": "1"}
    with pytest.raises(ValueError, match="source_datasets has 19 datasets, expected one per slice"):
        build_segmentation(axial.labels, headers[:-1], **kw)
    with pytest.raises(ValueError, match="no non-zero voxel"):
        build_segmentation(
            axial.labels.with_array(np.zeros(axial.labels.shape, np.uint8)), headers, **kw
        )
    floats = axial.labels.with_array(axial.labels.array.astype(np.float32))
    with pytest.raises(TypeError, match=r"integer labels .* \(use fractional=True"):
        build_segmentation(floats, headers, **kw)
    too_high = axial.labels.with_array(np.full(axial.labels.shape, 1.5, np.float32), segments=[])
    with pytest.raises(ValueError, match=r"probability map must lie in \[0, 1\]"):
        build_segmentation(too_high, headers, fractional=True, **kw)
    with pytest.raises(ValueError, match="at most one segment, got 4"):
        build_segmentation(axial.labels, headers, fractional=True, **kw)
    twice = axial.labels.with_array(
        axial.labels.array,
        segments=[*axial.labels.metadata["segments"], {"label": 5, "name": "body"}],
    )
    with pytest.raises(ValueError, match="names two labels 'body'"):
        build_segmentation(twice, headers, **kw)
    bad = axial.labels.with_array(axial.labels.array, segments=[{"label": 0, "name": "x"}])
    with pytest.raises(ValueError, match=r"label must be an integer in 1\.\.65535"):
        build_segmentation(bad, headers, **kw)


# -- the operator ------------------------------------------------------------------------------


def test_write_seg_operator(case: Case, tmp_path: Path) -> None:
    ctx = case.context("seg")
    out = write_seg(ctx, case.labels, algorithm_name="clara-ray thresholds", series_number=300)
    assert out == {"seg_files": [ctx.results.path(SEG_FILE)]}
    assert ctx.results.files() == [SEG_FILE]
    seg = hd.seg.segread(io.BytesIO(ctx.results.read_bytes(SEG_FILE)))
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "clara-ray thresholds"
    grid = source_grid(case)
    assert np.array_equal(
        seg_labels_on_grid(seg, grid), on_grid(case.labels, case.labels.array, grid)
    )
    again = write_seg(case.context("seg"), case.labels)  # a retry rewrites the same instance
    assert again == out
    assert (
        hd.seg.segread(io.BytesIO(ctx.results.read_bytes(SEG_FILE))).SOPInstanceUID
        == seg.SOPInstanceUID
    )


def test_write_seg_needs_source_paths(axial: Case) -> None:
    ctx = axial.context("seg")
    orphan = replace(axial.labels, source=None)
    with pytest.raises(ValueError, match="has no source series reference"):
        write_seg(ctx, orphan)


@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.uint16, np.int64])
def test_label_dtypes(axial: Case, dtype: type) -> None:
    array = np.zeros(axial.labels.shape, dtype=dtype)
    array[4:9, 10:40, 12:30] = 1
    if dtype is not np.bool_:
        array[12:14, 30:50, 30:50] = 300
    legend = [{"label": 1, "name": "liver"}, {"label": 300, "name": "lesion"}]
    labels = axial.labels.with_array(array, segments=legend)
    seg = _reread(
        build_segmentation(labels, axial.headers(), algorithm_name="a", algorithm_version="1")
    )
    names = [str(i.SegmentLabel) for i in seg.SegmentSequence]
    assert names == (["liver"] if dtype is np.bool_ else ["liver", "lesion"])
    grid = hd.Volume(np.zeros(labels.shape, np.uint8), labels.affine(), "PATIENT")
    combined = seg.get_volume(combine_segments=True, dtype=np.uint16).match_geometry(grid).array
    expected = np.zeros(array.shape, np.uint16)
    expected[array == 1] = 1
    expected[array == 300] = 2
    assert np.array_equal(combined, expected)
