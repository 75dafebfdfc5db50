"""The reference pipeline ct-lung-bone on the synthetic CT study, on a real local Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clara_ray.operators.nrrd import read_nrrd
from clara_ray.sample import generate_phantom, write_ct_series
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_ct_lung_bone_on_sample_study(platform, tmp_path):
    phantom = generate_phantom(slices=40, rows=256, columns=256, spacing=(2.5, 1.4, 1.4), seed=3)
    write_ct_series(phantom, tmp_path / "study")
    job = platform.create_job(
        str(ROOT / "pipelines" / "ct-lung-bone.yaml"), str(tmp_path / "study"), start=True
    )
    described = platform.wait_job(job.job_id, timeout=300)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    assert [o["name"] for o in described["operators"]] == [
        "load",
        "segment",
        "label-map",
        "measure",
    ]
    assert {r["path"] for r in described["results"]} == {
        "label-map/labels.nrrd",
        "label-map/labels.json",
        "measure/measurements.json",
    }

    platform.download(job.job_id, None, tmp_path / "out")
    with open(tmp_path / "out" / "label-map" / "labels.nrrd", "rb") as f:
        labels, _header = read_nrrd(f)
    assert labels.shape == phantom.hu.shape
    assert dice(labels == 2, phantom.labels["lungs"]) > 0.9
    assert dice(labels == 3, phantom.labels["bone"]) > 0.9

    measured = json.loads((tmp_path / "out" / "measure" / "measurements.json").read_text())
    by_name = {s["name"]: s for s in measured["segments"]}
    voxel_ml = 2.5 * 1.4 * 1.4 / 1000
    expected_lungs_ml = phantom.labels["lungs"].sum() * voxel_ml
    assert by_name["lungs"]["volume_ml"] == pytest.approx(expected_lungs_ml, rel=0.1)
    assert by_name["lungs"]["hu"]["mean"] < -700
    assert by_name["bone"]["hu"]["mean"] > 500
