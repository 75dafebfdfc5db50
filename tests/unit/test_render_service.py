"""The render server's service: listing, views, caches, overlays, saved views (no Ray)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clara_ray.errors import NotFoundError
from clara_ray.operators.nrrd import write_nrrd
from clara_ray.render import service as render_service
from clara_ray.render import sources
from clara_ray.render.request import parse_view_request, parse_view_settings
from clara_ray.render.service import RenderService
from clara_ray.render.slices import slice_image
from clara_ray.render.windowing import PRESETS
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume

MIB = 1024 * 1024


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    phantom = generate_phantom(slices=8, rows=40, columns=40, spacing=(2.0, 1.0, 1.0))
    write_ct_series(phantom, tmp_path / "study")
    storage = Storage(str(tmp_path / "storage"))
    storage.upload_payload("pay", tmp_path / "study")
    storage.seal_payload("pay")
    return storage


@pytest.fixture
def service(storage: Storage) -> RenderService:
    return RenderService(storage, cache_bytes=64 * MIB, image_cache_bytes=8 * MIB)


def add_label_map(storage: Storage, like: Volume, origin_shift: float = 0.0) -> None:
    labels = np.zeros(like.shape, dtype=np.uint8)
    labels[:, 10:20, 10:20] = 2
    origin = (like.origin[0] + origin_shift, like.origin[1], like.origin[2])
    results = storage.results("job", "label-map")
    with results.open_output("labels.nrrd") as out:
        write_nrrd(out, Volume(labels, like.spacing, origin, like.direction))
    results.write_json("labels.json", {"segments": [{"label": 2, "name": "lungs"}]})


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def image_of(service: RenderService) -> Volume:
    source = sources.find_volumes(service.storage, "job", "pay")[0]
    return sources.load_volume(service.storage, "pay", source)


def test_the_listing_gives_lengths_overlays_and_segment_colours(
    service: RenderService, storage: Storage
) -> None:
    add_label_map(storage, image_of(service))
    image, labels = service.volumes("job", "pay", final=True)
    assert image["volume"] == "series-1" and image["kind"] == "image"
    assert image["lengths"] == {"axial": 8, "coronal": 40, "sagittal": 40}
    assert image["overlays"] == ["label-map.labels"] and image["settings"] is None
    assert labels["segments"][0]["name"] == "lungs" and len(labels["segments"][0]["color"]) == 3


def test_a_slice_is_the_windowed_slice_and_a_repeat_comes_from_the_cache(
    service: RenderService, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = parse_view_request("slice", {"index": "3", "preset": "lung"})
    first = service.render("job", "pay", "series-1", request, final=True)
    expected = slice_image(image_of(service), "axial", 3, PRESETS["lung"])
    assert np.array_equal(png(first), expected)
    monkeypatch.setattr(render_service, "load_volume", lambda *a: pytest.fail("read again"))
    service.volumes_cache.clear()
    assert service.render("job", "pay", "series-1", request, final=True) == first
    other = parse_view_request("slice", {"index": "4", "preset": "lung"})
    with pytest.raises(pytest.fail.Exception, match="read again"):
        service.render("job", "pay", "series-1", other, final=True)


def test_an_overlay_colours_its_segment_and_one_off_the_grid_is_refused(
    service: RenderService, storage: Storage
) -> None:
    add_label_map(storage, image_of(service))
    request = parse_view_request(
        "slice", {"index": "4", "overlay": "label-map.labels", "opacity": "1"}
    )
    rgb = png(service.render("job", "pay", "series-1", request, final=False))
    colour = service.volumes("job", "pay", final=False)[1]["segments"][0]["color"]
    assert rgb.shape == (40, 40, 3)
    assert tuple(rgb[15, 15]) == tuple(colour) and tuple(rgb[2, 2]) != tuple(colour)
    add_label_map(storage, image_of(service), origin_shift=5.0)
    fresh = RenderService(storage, cache_bytes=64 * MIB, image_cache_bytes=0)
    with pytest.raises(
        ValueError, match=re.escape("overlay: 'label-map.labels' is not a label map on")
    ):
        fresh.render("job", "pay", "series-1", request, final=False)


def test_mip_and_3d_views_come_out_at_the_asked_size(service: RenderService) -> None:
    mip = png(service.render("job", "pay", "series-1", parse_view_request("mip", {}), final=True))
    assert mip.shape == (40, 40)
    view = parse_view_request("3d", {"size": "64", "azimuth": "90", "preset": "ct_soft_tissue"})
    assert png(service.render("job", "pay", "series-1", view, final=True)).shape == (64, 64, 3)


def test_unknown_volumes_name_the_ones_there(service: RenderService) -> None:
    with pytest.raises(NotFoundError, match=r"no volume 'ct' \(volumes: series-1\)"):
        service.render("job", "pay", "ct", parse_view_request("slice", {}), final=True)


def test_saved_view_settings_round_trip(service: RenderService) -> None:
    settings = parse_view_settings({"mode": "3d", "azimuth": 45, "segments": [2]})
    service.save_view_settings("job", "pay", "series-1", settings, final=True)
    saved = service.view_settings("job", "series-1")
    assert saved is not None and (saved["mode"], saved["azimuth"], saved["segments"]) == (
        "3d",
        45.0,
        [2],
    )
    assert service.volumes("job", "pay", final=True)[0]["settings"] == saved
    with pytest.raises(NotFoundError):
        service.save_view_settings("job", "pay", "nope", settings, final=True)


@pytest.mark.parametrize(
    ("view", "params", "message"),
    [
        ("cube", {}, "view: 'cube' is not a view; expected one of slice, mip, minip, 3d"),
        ("slice", {"size": "4096"}, "size: Input should be less than or equal to 1024"),
        ("slice", {"window": "400"}, "window and level: give both"),
        ("slice", {"window": "-5", "level": "0"}, "window: Input should be greater than 0"),
        ("slice", {"preset": "ct_bone"}, "preset: 'ct_bone' is not a slice preset"),
        ("3d", {"preset": "lung"}, "preset: 'lung' is not a 3d preset"),
        ("3d", {"elevation": "100"}, "elevation: Input should be less than or equal to 90"),
        ("slice", {"axis": "oblique"}, "axis: Input should be 'axial', 'coronal' or 'sagittal'"),
        ("slice", {"index": "x"}, "index: Input should be a valid integer"),
        ("slice", {"segments": "1,a"}, "segments: expected label values separated by commas"),
        ("slice", {"zoom": "2"}, "zoom: Extra inputs are not permitted"),
    ],
)
def test_bad_view_parameters_are_named(view: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_view_request(view, params)


def test_an_index_beyond_the_axis_names_its_range(service: RenderService) -> None:
    request = parse_view_request("slice", {"index": "8"})
    with pytest.raises(ValueError, match=r"index must be in 0\.\.7 for axis 'axial', got 8"):
        service.render("job", "pay", "series-1", request, final=True)
