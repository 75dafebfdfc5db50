"""The render server's views on cupy: slices, MIP/MinIP, overlays and 3-D equal numpy's.

Slices, projections and label overlays are index arithmetic plus linear interpolation
in float32; CUDA may fuse a multiply-add where numpy rounds twice, so a grey level may
differ by one.  Ray casting also composites in float32 with early ray termination
(within 1/255 of opaque), so a pixel may differ by a few levels; the mean difference
stays far below one level.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clara_ray.operators.nrrd import write_nrrd
from clara_ray.render import (
    CT_BONE,
    CT_SOFT_TISSUE,
    PRESETS,
    Camera,
    Slab,
    blend_labels,
    label_projection,
    label_slice,
    projection_image,
    render_volume,
    slice_image,
    sources,
)
from clara_ray.render.actor import volume_mover
from clara_ray.render.request import parse_view_request
from clara_ray.render.service import RenderService
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage
from clara_ray.volume import Volume, array_module
from tests.gpu.cuda import need_cupy, requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]

MIB = 1024 * 1024
# An axial series stored feet-first and mirrored, so every view flips and transposes.
DIRECTION = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


@pytest.fixture(scope="module")
def volumes() -> tuple[Volume, Volume]:
    """A CT phantom and its label map (lungs 1, bone 2, liver 3), on the host."""
    phantom = generate_phantom(slices=48, rows=160, columns=128, spacing=(2.5, 0.9, 0.8))
    labels = np.zeros(phantom.hu.shape, dtype=np.uint8)
    for value, name in enumerate(("lungs", "bone", "liver"), start=1):
        labels[phantom.labels[name]] = value
    ct = Volume(phantom.hu, spacing=phantom.spacing, origin=(10.0, -5.0, 30.0), direction=DIRECTION)
    return ct, ct.with_array(labels)


def on_gpu(volume: Volume) -> Volume:
    return volume.with_array(need_cupy().asarray(volume.array))


def host(image: Any) -> np.ndarray:
    assert array_module(image) is not np, "the view was computed on the GPU"
    return np.asarray(image.get())


def assert_close(gpu: np.ndarray, cpu: np.ndarray, max_levels: int, mean_levels: float) -> None:
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype == np.uint8
    diff = np.abs(gpu.astype(np.int16) - cpu.astype(np.int16))
    assert int(diff.max()) <= max_levels, f"max difference {int(diff.max())} grey levels"
    assert float(diff.mean()) <= mean_levels, f"mean difference {float(diff.mean()):.4f}"


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("preset", ["soft_tissue", "lung", "bone"])
def test_slices_on_cupy_equal_numpy(volumes: tuple[Volume, Volume], axis: str, preset: str) -> None:
    ct, _ = volumes
    gpu = on_gpu(ct)
    index = ct.shape[0] // 2 if axis == "axial" else 70
    window = PRESETS[preset]
    cpu_image = slice_image(ct, axis, index, window)
    assert_close(host(slice_image(gpu, axis, index, window)), cpu_image, 1, 0.01)


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("slab", [None, 12.0], ids=["whole", "slab"])
def test_projections_on_cupy_equal_numpy(
    volumes: tuple[Volume, Volume], axis: str, mode: str, slab: float | None
) -> None:
    ct, _ = volumes
    gpu = on_gpu(ct)
    centre = Slab(20, slab) if slab else None
    window = PRESETS["bone"]
    cpu_image = projection_image(ct, axis, window, mode, centre)
    assert_close(host(projection_image(gpu, axis, window, mode, centre)), cpu_image, 1, 0.01)


@pytest.mark.parametrize("axis", ["axial", "coronal"])
def test_label_overlays_on_cupy_equal_numpy(volumes: tuple[Volume, Volume], axis: str) -> None:
    ct, labels = volumes
    gpu_ct, gpu_labels = on_gpu(ct), on_gpu(labels)
    index = 20 if axis == "axial" else 70
    window = PRESETS["soft_tissue"]
    np.testing.assert_array_equal(
        host(label_slice(gpu_labels, axis, index)), label_slice(labels, axis, index)
    )
    np.testing.assert_array_equal(
        host(label_projection(gpu_ct, gpu_labels, axis)), label_projection(ct, labels, axis)
    )
    cpu_rgb = blend_labels(slice_image(ct, axis, index, window), label_slice(labels, axis, index))
    gpu_rgb = blend_labels(
        slice_image(gpu_ct, axis, index, window), label_slice(gpu_labels, axis, index)
    )
    assert_close(host(gpu_rgb), cpu_rgb, 1, 0.01)


@pytest.mark.parametrize("transfer", [CT_BONE, CT_SOFT_TISSUE], ids=["bone", "soft_tissue"])
@pytest.mark.parametrize(("azimuth", "elevation"), [(0.0, 0.0), (35.0, 20.0), (90.0, -10.0)])
def test_3d_renderings_on_cupy_equal_numpy(
    volumes: tuple[Volume, Volume], transfer: Any, azimuth: float, elevation: float
) -> None:
    ct, _ = volumes
    camera = Camera(azimuth=azimuth, elevation=elevation)
    cpu_image = render_volume(ct, camera, transfer, 160)
    gpu_image = host(render_volume(on_gpu(ct), camera, transfer, 160))
    assert cpu_image.any(), "the rendering shows the volume"
    assert_close(gpu_image, cpu_image, 4, 0.05)


# -- the server, as the render actor runs it on a GPU --------------------------------


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    phantom = generate_phantom(slices=24, rows=96, columns=96, spacing=(2.0, 1.0, 1.0))
    write_ct_series(phantom, tmp_path / "study")
    storage = Storage(str(tmp_path / "storage"))
    storage.upload_payload("pay", tmp_path / "study")
    storage.seal_payload("pay")
    return storage


def add_label_map(storage: Storage, like: Volume) -> None:
    labels = np.zeros(like.shape, dtype=np.uint8)
    labels[:, 30:60, 20:50] = 1
    results = storage.results("job", "label-map")
    with results.open_output("labels.nrrd") as out:
        write_nrrd(out, like.with_array(labels))
    results.write_json("labels.json", {"segments": [{"label": 1, "name": "liver"}]})


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_render_actors_mover_puts_volumes_on_the_gpu() -> None:
    cupy = need_cupy()
    assert volume_mover([]) is None
    mover = volume_mover(["0"])
    assert mover is not None, "a GPU with a working cupy moves volumes there"
    moved = mover(Volume(np.zeros((2, 3, 4), dtype=np.int16), spacing=(2.0, 1.0, 1.0)))
    assert array_module(moved.array) is cupy and moved.spacing == (2.0, 1.0, 1.0)


def test_the_server_on_the_gpu_serves_the_same_pngs(storage: Storage) -> None:
    need_cupy()
    source = sources.find_volumes(storage, "job", "pay")[0]
    add_label_map(storage, sources.load_volume(storage, "pay", source))
    gpu = RenderService(
        storage, cache_bytes=64 * MIB, image_cache_bytes=0, to_device=volume_mover(["0"])
    )
    cpu = RenderService(storage, cache_bytes=64 * MIB, image_cache_bytes=0)
    views = [
        ("slice", {"index": "12", "preset": "lung"}, 1, 0.01),
        ("slice", {"axis": "coronal", "index": "40"}, 1, 0.01),
        ("slice", {"index": "10", "overlay": "label-map.labels", "opacity": "0.6"}, 1, 0.01),
        ("mip", {"axis": "sagittal"}, 1, 0.01),
        ("minip", {"axis": "coronal", "slab": "10", "index": "50"}, 1, 0.01),
        ("mip", {"overlay": "label-map.labels"}, 1, 0.01),
        ("3d", {"size": "128", "azimuth": "30", "elevation": "15"}, 4, 0.05),
        ("3d", {"size": "96", "preset": "ct_soft_tissue"}, 4, 0.05),
    ]
    for view, params, max_levels, mean_levels in views:
        request = parse_view_request(view, params)
        expected = png(cpu.render("job", "pay", source.name, request, final=False))
        got = png(gpu.render("job", "pay", source.name, request, final=False))
        assert_close(got, expected, max_levels, mean_levels)
    kept = gpu.volumes_cache.get(("volume", "job", source.name))
    assert kept is not None and array_module(kept.array) is not np, "the server kept it on the GPU"
