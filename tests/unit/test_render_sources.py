"""A job's volumes: the payload's series and the label maps in its results (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clara_ray.operators.nrrd import write_nrrd
from clara_ray.render.sources import find_volumes, load_volume, same_grid
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    phantom = generate_phantom(slices=6, rows=32, columns=24, spacing=(3.0, 0.8, 0.8))
    write_ct_series(phantom, tmp_path / "study", origin=(-10.0, -12.0, 40.0))
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    storage = Storage(str(tmp_path / "storage"))
    storage.upload_payload("pay", tmp_path / "study")
    storage.seal_payload("pay")
    return storage


def write_labels(storage: Storage, image: Volume, origin: tuple[float, float, float]) -> None:
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[2:4, 10:20, 5:15] = 3
    results = storage.results("job", "label-map")
    with results.open_output("labels.nrrd") as out:
        write_nrrd(out, Volume(labels, image.spacing, origin, image.direction))
    results.write_json(
        "labels.json",
        {"label_map": "labels.nrrd", "segments": [{"label": 3, "name": "bone"}]},
    )


def test_a_job_shows_its_series_and_its_label_maps_with_their_legend(storage: Storage) -> None:
    (series,) = find_volumes(storage, "job", "pay")
    assert (series.name, series.kind, len(series.files)) == ("series-1", "image", 6)
    assert series.description == "CT #1 Synthetic CT (6 images)"
    image = load_volume(storage, "pay", series)
    assert image.shape == (6, 32, 24) and image.spacing == pytest.approx((3.0, 0.8, 0.8))
    write_labels(storage, image, image.origin)
    names = [(v.name, v.kind) for v in find_volumes(storage, "job", "pay")]
    assert names == [("series-1", "image"), ("label-map.labels", "labels")]
    labels_source = find_volumes(storage, "job", "pay")[1]
    assert labels_source.to_dict()["segments"] == [{"value": 3, "name": "bone"}]
    labels = load_volume(storage, "pay", labels_source)
    assert labels.spacing == pytest.approx(image.spacing)
    assert np.allclose(labels.affine(), image.affine())
    assert same_grid(image, labels)
    assert int(labels.array[3, 15, 10]) == 3 and int(labels.array.sum()) == 3 * 2 * 10 * 10


def test_a_label_map_off_the_image_grid_does_not_overlay_it(storage: Storage) -> None:
    (series,) = find_volumes(storage, "job", "pay")
    image = load_volume(storage, "pay", series)
    shifted = (image.origin[0] + 2.0, image.origin[1], image.origin[2])
    write_labels(storage, image, shifted)
    labels = load_volume(storage, "pay", find_volumes(storage, "job", "pay")[1])
    assert not same_grid(image, labels)
    smaller = Volume(np.zeros((5, 32, 24)), image.spacing, image.origin, image.direction)
    assert not same_grid(image, smaller)
