"""DICOM SEG results as label maps: listed, read onto their series' grid, drawn over it (no Ray)."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from clara_ray.derived import build_segmentation
from clara_ray.render import service as render_service
from clara_ray.render import sources
from clara_ray.render.request import parse_view_request
from clara_ray.render.service import RenderService
from clara_ray.sample import Phantom, generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume

MIB = 1024 * 1024
LABELS = {"lungs": 2, "bone": 3}
LEGEND = [{"label": label, "name": name} for name, label in LABELS.items()]


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=8, rows=40, columns=40, spacing=(2.0, 1.0, 1.0), seed=5)


@pytest.fixture
def storage(tmp_path: Path, phantom: Phantom) -> Storage:
    storage = Storage(str(tmp_path / "storage"))
    for payload in ("pay", "other"):
        write_ct_series(phantom, tmp_path / payload, reverse_order=True)
        storage.upload_payload(payload, tmp_path / payload)
        storage.seal_payload(payload)
    return storage


@pytest.fixture
def service(storage: Storage) -> RenderService:
    return RenderService(storage, cache_bytes=64 * MIB, image_cache_bytes=8 * MIB)


def image_of(storage: Storage, payload_id: str) -> Volume:
    return sources.load_volume(
        storage, payload_id, sources.find_volumes(storage, "no-job", payload_id)[0]
    )


def label_map(phantom: Phantom) -> np.ndarray:
    labels = np.zeros(phantom.hu.shape, dtype=np.uint8)
    for name, label in LABELS.items():
        labels[phantom.labels[name]] = label
    return labels


def segment_numbers(phantom: Phantom) -> np.ndarray:
    """The label map as the SEG numbers it: lungs 1, bone 2."""
    return np.array([0, 0, 1, 2], dtype=np.uint8)[label_map(phantom)]


def write_seg(
    storage: Storage,
    payload_id: str,
    operator: str,
    labels: np.ndarray,
    slices: slice = slice(None),
) -> None:
    """A SEG of ``labels`` (on the payload's series) over the instances of ``slices``."""
    image = image_of(storage, payload_id)
    assert image.source is not None
    first = slices.start or 0
    instances = image.source.instances[slices]
    x, y, z = (float(v) for v in (image.affine() @ np.array([first, 0, 0, 1]))[:3])
    part = Volume(
        labels[slices],
        image.spacing,
        (x, y, z),
        image.direction,
        source=replace(image.source, instances=instances),
        metadata={"segments": LEGEND},
    )
    payload = storage.payload_view(payload_id)
    headers = [pydicom.dcmread(payload.open(i.path), stop_before_pixels=True) for i in instances]
    seg = build_segmentation(part, headers, algorithm_name="test", algorithm_version="1.0")
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    storage.results("job", operator).write_bytes("seg.dcm", buffer.getvalue())


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_a_seg_is_listed_with_its_segments_and_overlays_its_series(
    service: RenderService, storage: Storage, phantom: Phantom
) -> None:
    write_seg(storage, "pay", "seg", label_map(phantom))
    results = storage.results("job", "seg")
    results.write_bytes("notes.txt", b"not DICOM")
    results.write_bytes("tiny.bin", b"x")
    image, seg = service.volumes("job", "pay", final=True)
    assert (seg["volume"], seg["kind"], seg["description"]) == (
        "seg.seg",
        "labels",
        "segmentation seg/seg.dcm",
    )
    assert [(s["value"], s["name"]) for s in seg["segments"]] == [(1, "lungs"), (2, "bone")]
    assert image["overlays"] == ["seg.seg"]


def test_a_seg_reads_onto_the_image_grid_voxel_for_voxel(
    storage: Storage, phantom: Phantom
) -> None:
    write_seg(storage, "pay", "seg", label_map(phantom))
    image = image_of(storage, "pay")
    (_, seg) = sources.find_volumes(storage, "job", "pay")
    labels = sources.load_volume(storage, "pay", seg, image)
    assert sources.same_grid(image, labels)
    np.testing.assert_array_equal(labels.array, segment_numbers(phantom))
    with pytest.raises(ValueError, match=r"seg\.seg is a DICOM SEG"):
        sources.load_volume(storage, "pay", seg)


def test_a_seg_of_some_slices_is_empty_on_the_others(storage: Storage, phantom: Phantom) -> None:
    write_seg(storage, "pay", "seg", label_map(phantom), slices=slice(2, 6))
    image = image_of(storage, "pay")
    labels = sources.load_volume(
        storage, "pay", sources.find_volumes(storage, "job", "pay")[1], image
    )
    expected = segment_numbers(phantom)
    expected[:2] = expected[6:] = 0
    assert expected[2:6].any()
    np.testing.assert_array_equal(labels.array, expected)


def test_a_seg_overlay_colours_its_segment_and_is_read_once(
    service: RenderService, storage: Storage, phantom: Phantom, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_seg(storage, "pay", "seg", label_map(phantom))
    bone = phantom.labels["bone"]
    index = int(np.argmax(bone.sum(axis=(1, 2))))
    request = parse_view_request(
        "slice", {"index": str(index), "overlay": "seg.seg", "opacity": "1"}
    )
    rgb = png(service.render("job", "pay", "series-1", request, final=True))
    colour = tuple(service.volumes("job", "pay", final=True)[1]["segments"][1]["color"])
    inside = tuple(int(v) for v in np.argwhere(bone[index])[0])
    outside = tuple(int(v) for v in np.argwhere(label_map(phantom)[index] == 0)[0])
    assert tuple(rgb[inside]) == colour and tuple(rgb[outside]) != colour
    assert ("labels", "job", "seg.seg", "series-1") in service.volumes_cache
    monkeypatch.setattr(render_service, "load_volume", lambda *a: pytest.fail("read again"))
    service.images_cache.clear()
    assert np.array_equal(png(service.render("job", "pay", "series-1", request, final=True)), rgb)


def test_a_seg_of_other_instances_does_not_overlay_the_image(
    service: RenderService, storage: Storage, phantom: Phantom
) -> None:
    write_seg(storage, "other", "other", label_map(phantom))
    image, seg = service.volumes("job", "pay", final=False)
    assert seg["volume"] == "other.seg" and image["overlays"] == []
    request = parse_view_request("slice", {"overlay": "other.seg", "opacity": "1"})
    with pytest.raises(
        ValueError,
        match=re.escape("overlay: 'other.seg' is not a label map on the grid of series-1"),
    ):
        service.render("job", "pay", "series-1", request, final=False)
    on_other = image_of(storage, "other")
    seg_source = sources.find_volumes(storage, "job", "pay")[1]
    assert sources.same_grid(image_of(storage, "pay"), on_other)
    with pytest.raises(ValueError, match=r"other\.seg references none of the instances"):
        sources.load_volume(storage, "pay", seg_source, image_of(storage, "pay"))
