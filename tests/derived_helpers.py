"""Phantom payloads and read-back helpers shared by the SEG/SR tests (unit and peer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from clara_ray.context import OperatorContext
from clara_ray.operators.series_loader import load_series
from clara_ray.sample import Phantom, generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume

_C, _S = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
_ROT = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
_OBLIQUE_ROW = _ROT @ np.array([1.0, 0.0, 0.0])
_OBLIQUE_COL = _ROT @ np.array([0.0, _C, _S])

GEOMETRIES: dict[str, dict[str, Any]] = {
    "axial": {},
    "reversed": {"reverse_order": True},
    "oblique": {
        "image_orientation": (*_OBLIQUE_ROW, *_OBLIQUE_COL),
        "origin": (-40.0, 15.5, -300.25),
        "reverse_order": True,
    },
}
"""Source series layouts every SEG/SR test runs on (``write_ct_series`` keyword args)."""

LEGEND = [
    {"label": 1, "name": "body"},
    {"label": 2, "name": "lungs"},
    {"label": 3, "name": "bone"},
    {"label": 4, "name": "liver"},
]


@dataclass
class Case:
    """A sealed payload holding one phantom CT series, loaded, with a label map on its grid."""

    storage: Storage
    phantom: Phantom
    files: list[Path]
    volume: Volume
    labels: Volume

    def context(self, operator: str, job_id: str = "job-1") -> OperatorContext:
        payload = self.storage.payload_view("p1")
        return OperatorContext(
            job_id=job_id,
            job_name="test",
            pipeline="test",
            operator=operator,
            payload=payload,
            results=self.storage.results(job_id, operator),
        )

    def headers(self) -> list[Dataset]:
        """The source headers in the volume's slice order."""
        folder = self.files[0].parent
        return [
            pydicom.dcmread(folder / i.path, stop_before_pixels=True)
            for i in self.volume.source.instances  # type: ignore[union-attr]
        ]


def label_map(phantom: Phantom) -> np.ndarray:
    """Body 1, lungs 2, bone 3, liver 4 (later ones over earlier ones)."""
    labels = np.zeros(phantom.hu.shape, dtype=np.uint8)
    for entry in LEGEND:
        labels[phantom.labels[entry["name"]]] = entry["label"]
    return labels


def make_case(tmp_path: Path, geometry: str, seed: int = 3, slices: int = 20) -> Case:
    """Write, upload and load a ``slices``x64x64 phantom series laid out as ``geometry``."""
    phantom = generate_phantom(
        slices=slices, rows=64, columns=64, spacing=(2.5, 5.0, 5.0), seed=seed
    )
    folder = tmp_path / "source" / geometry
    files = write_ct_series(phantom, folder, **GEOMETRIES[geometry])
    storage = Storage(str(tmp_path / "storage"))
    storage.upload_payload("p1", folder)
    storage.seal_payload("p1")
    case = Case(storage, phantom, files, volume=None, labels=None)  # type: ignore[arg-type]
    volume = load_series(case.context("load"), storage.payload_view("p1"))["volume"]
    # The phantom's slice k lies at origin + k * spacing * (row x col): the loaded
    # volume must be the phantom itself, whatever the instance order.
    np.testing.assert_array_equal(volume.array, phantom.hu)
    case.volume = volume
    case.labels = volume.with_array(label_map(phantom), segments=[dict(e) for e in LEGEND])
    return case


def source_grid(case: Case) -> hd.Volume:
    """The source series' grid as highdicom reads it from the files (pixels included)."""
    return hd.get_volume_from_series([pydicom.dcmread(p) for p in case.files])


def on_grid(volume: Volume, array: np.ndarray, grid: hd.Volume) -> np.ndarray:
    """``array`` (on ``volume``'s grid, by its affine) resampled onto ``grid``."""
    return hd.Volume(array, volume.affine(), "PATIENT").match_geometry(grid).array


def seg_labels_on_grid(seg: hd.seg.Segmentation, grid: hd.Volume) -> np.ndarray:
    """A binary SEG read back as a map of segment *labels* (names mapped by LEGEND) on ``grid``."""
    combined = seg.get_volume(combine_segments=True, dtype=np.uint16).match_geometry(grid)
    by_name = {e["name"]: e["label"] for e in LEGEND}
    lut = np.zeros(len(seg.SegmentSequence) + 1, dtype=np.uint16)
    for item in seg.SegmentSequence:
        lut[int(item.SegmentNumber)] = by_name.get(str(item.SegmentLabel), 0)
    return lut[combined.array]
