"""SEG and SR from the operators against dicom3tools: dciodvfy per object, dcentvfy with the source.

Every geometry the loader handles (axial, reversed instance order, oblique)
goes through measure_segments -> write_seg -> write_sr; a fractional SEG is
checked too.  dcentvfy is run on the SEG, the SR and every source instance
together (same patient, study and frame of reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clara_ray.operators.dicom_seg import write_seg
from clara_ray.operators.dicom_sr import write_sr
from clara_ray.operators.measurements import measure_segments
from tests.derived_helpers import GEOMETRIES, Case, make_case
from tests.peer.dicom3tools import assert_consistent, assert_valid

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_seg_and_sr_pass_dciodvfy_and_dcentvfy(tmp_path: Path, geometry: str) -> None:
    case = make_case(tmp_path, geometry)
    measurements = measure_segments(case.context("measure"), case.labels, case.volume)
    seg_files = write_seg(case.context("seg"), case.labels)["seg_files"]
    sr_files = write_sr(case.context("sr"), measurements["measurements"], seg_files, case.labels)[
        "sr_files"
    ]
    seg, sr = Path(seg_files[0]), Path(sr_files[0])  # local storage: storage paths are OS paths
    assert_valid(seg)
    assert_valid(sr)
    assert_consistent([seg, sr, *case.files])


def test_fractional_seg_passes(tmp_path: Path) -> None:
    case = make_case(tmp_path, "oblique")
    probability = case.phantom.labels["liver"].astype(np.float32) * np.float32(0.75)
    labels = case.volume.with_array(probability, segments=[{"label": 1, "name": "liver"}])
    seg_files = write_seg(
        case.context("seg-ai"),
        labels,
        algorithm_name="liver-seg",
        algorithm_family="ArtificialIntelligence",
        fractional=True,
    )["seg_files"]
    seg = Path(seg_files[0])
    assert_valid(seg)
    assert_consistent([seg, *case.files])


def test_unknown_segment_names_still_pass(tmp_path: Path) -> None:
    case: Case = make_case(tmp_path, "axial")
    labels = case.labels.with_array(
        case.labels.array, segments=[{"label": 4, "name": "lesion"}]
    )  # body, lungs and bone unnamed: "segment N", generic Tissue
    seg = Path(write_seg(case.context("seg"), labels)["seg_files"][0])
    assert_valid(seg)
    assert_consistent([seg, *case.files])


def test_single_segment_seg_and_sr_pass(tmp_path: Path) -> None:
    """One segment (the liver pipeline's case): highdicom keeps it in the shared groups."""
    case = make_case(tmp_path, "axial")
    liver = case.phantom.labels["liver"].astype(np.uint8)
    labels = case.volume.with_array(liver, segments=[{"label": 1, "name": "liver"}])
    measurements = measure_segments(case.context("measure"), labels, case.volume)
    seg_files = write_seg(
        case.context("seg"),
        labels,
        algorithm_name="liver-seg",
        algorithm_family="ArtificialIntelligence",
    )["seg_files"]
    sr_files = write_sr(case.context("sr"), measurements["measurements"], seg_files, labels)[
        "sr_files"
    ]
    seg, sr = Path(seg_files[0]), Path(sr_files[0])
    assert_valid(seg)
    assert_valid(sr)
    assert_consistent([seg, sr, *case.files])
