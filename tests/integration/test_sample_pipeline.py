"""The reference pipelines on synthetic CT studies, on a real local Ray."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest

from clara_ray.operators.nrrd import read_nrrd
from clara_ray.sample import generate_phantom, write_ct_series
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture
def phantom_study(tmp_path):
    phantom = generate_phantom(slices=40, rows=256, columns=256, spacing=(2.5, 1.4, 1.4), seed=3)
    write_ct_series(phantom, tmp_path / "study")
    return phantom, tmp_path / "study"


def run(platform, pipeline: str, study, **params) -> dict:
    job = platform.create_job(
        str(ROOT / "pipelines" / pipeline), str(study), parameters=params, start=True
    )
    described = platform.wait_job(job.job_id, timeout=300)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described["reason"]
    return described


def test_ct_lung_bone_on_sample_study(platform, phantom_study, tmp_path):
    phantom, study = phantom_study
    described = run(platform, "ct-lung-bone.yaml", study, destination="none")
    assert [o["name"] for o in described["operators"]] == [
        "select",
        "segment",
        "label-map",
        "measure",
        "seg",
        "sr",
        "export",
    ]
    assert {r["path"] for r in described["results"]} == {
        "label-map/labels.nrrd",
        "label-map/labels.json",
        "measure/measurements.json",
        "seg/seg.dcm",
        "sr/sr.dcm",
    }
    assert described["exports"] == []

    platform.download(described["job_id"], None, tmp_path / "out")
    with open(tmp_path / "out" / "label-map" / "labels.nrrd", "rb") as f:
        labels, _header = read_nrrd(f)
    assert labels.shape == phantom.hu.shape
    assert dice(labels == 2, phantom.labels["lungs"]) > 0.9
    assert dice(labels == 3, phantom.labels["bone"]) > 0.9

    measured = json.loads((tmp_path / "out" / "measure" / "measurements.json").read_text())
    by_name = {s["name"]: s for s in measured["segments"]}
    voxel_ml = 2.5 * 1.4 * 1.4 / 1000
    assert by_name["lungs"]["volume_ml"] == pytest.approx(
        phantom.labels["lungs"].sum() * voxel_ml, rel=0.1
    )
    assert by_name["lungs"]["hu"]["mean"] < -700
    assert by_name["bone"]["hu"]["mean"] > 500

    seg = hd.seg.segread(tmp_path / "out" / "seg" / "seg.dcm")
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["body", "lungs", "bone"]
    sr = pydicom.dcmread(tmp_path / "out" / "sr" / "sr.dcm")
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage


def test_ct_liver_ai_on_sample_study(platform, phantom_study, tmp_path):
    phantom, study = phantom_study
    described = run(platform, "ct-liver-ai.yaml", study, destination="none")
    liver = next(o for o in described["operators"] if o["name"] == "liver")
    assert liver["gpu_ids"], "the session Ray declares GPUs: the AI operator is given one"
    platform.download(described["job_id"], None, tmp_path / "out")
    with open(tmp_path / "out" / "label-map" / "labels.nrrd", "rb") as f:
        labels, _header = read_nrrd(f)
    assert dice(labels == 1, phantom.labels["liver"]) > 0.9
    seg = hd.seg.segread(tmp_path / "out" / "seg" / "seg.dcm")
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["liver"]
