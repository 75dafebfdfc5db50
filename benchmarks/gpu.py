"""CPU against GPU for the operators and views that run on a GPU, on the sample CT.

The volume is the sample study's phantom (120x512x512 int16 HU, 2.5 x 0.7 x 0.7 mm,
what ``clara-ray sample-study`` writes).  Each figure is the spread (median, range,
runs) of ``repeats`` runs in milliseconds, after one untimed warm-up run per side (the
GPU's first call compiles its kernels: reported on its own as ``gpu_first_call_ms``);
``speedup`` is the spread of the per-repeat ratios CPU time / GPU time.

* ``segment_ct``: the threshold segmentation operator, on the CPU (numpy), in a run
  given a GPU (numpy in, moved to the GPU, numpy labels out: what a pipeline task
  does) and on a volume already on the GPU (cupy in and out);
* ``render``: the render server's views, host image out (as the server encodes it):
  axial and coronal slices, axial and coronal MIPs, a 512x512 3-D rendering of the
  prepared volume;
* ``liver_model``: the liver-seg TorchScript model over the whole volume (the
  operator's sliding window), on the CPU and on CUDA.

Needs an NVIDIA GPU with cupy (``pip install -e '.[gpu]'``) and a CUDA build of
torch; without one :func:`run` raises ``RuntimeError("no CUDA device: ...")``
(:func:`cuda_present` asks first, for a runner that adds this benchmark only then).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.stats import ratio_spread, spread
from clara_ray.context import OperatorContext
from clara_ray.storage import Storage

ROOT = Path(__file__).resolve().parent.parent


def _cuda() -> tuple[ModuleType, str]:
    """cupy and the device's name.

    ``RuntimeError("no CUDA device: ...")`` when neither torch nor cupy sees one; a
    device that one of them cannot use is a ``RuntimeError`` naming the fix.
    """
    import torch

    from clara_ray.volume import CudaUnavailableError, cuda_array_module

    torch_build = f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})"
    try:
        cupy = cuda_array_module()
    except CudaUnavailableError as exc:
        if not torch.cuda.is_available():
            raise RuntimeError(f"no CUDA device: {exc}; {torch_build} sees none either") from None
        raise RuntimeError(
            f"CUDA device {torch.cuda.get_device_name(0)} found, but cupy cannot use it: {exc}"
        ) from None
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"CUDA device found by cupy, but {torch_build} sees none: install a CUDA build of torch"
        )
    return cupy, torch.cuda.get_device_name(0)


def cuda_present() -> bool:
    """Whether :func:`run` finds a CUDA device that cupy and torch can use (never raises)."""
    try:
        _cuda()
    except (RuntimeError, ImportError):
        return False
    return True


def _context(root: Path, gpu_ids: tuple[int, ...]) -> OperatorContext:
    storage = Storage(str(root / "storage"))
    if not storage.is_sealed("payload"):
        source = root / "source"
        source.mkdir(exist_ok=True)
        (source / "empty").write_bytes(b"")
        storage.upload_payload("payload", source)
        storage.seal_payload("payload")
    return OperatorContext(
        job_id="bench",
        job_name="bench",
        pipeline="bench",
        operator="gpu" if gpu_ids else "cpu",
        payload=storage.payload_view("payload"),
        results=storage.results("bench", "gpu" if gpu_ids else "cpu"),
        gpu_ids=gpu_ids,
    )


def _ms(function: Callable[[], object], repeats: int) -> list[float]:
    function()  # warm-up: caches, kernel compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _first_call(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return round((time.perf_counter() - start) * 1e3, 3)


def _compare(cpu: list[float], gpu: list[float]) -> dict[str, Any]:
    return {"cpu_ms": spread(cpu), "gpu_ms": spread(gpu), "speedup": ratio_spread(cpu, gpu)}


def run(repeats: int = 3) -> dict[str, Any]:
    cupy, device = _cuda()
    from clara_ray.inference.torchscript import TorchScriptModel
    from clara_ray.operators.ai_segmentation import DEFAULT_MODEL_PATH, liver_mask
    from clara_ray.operators.segmentation import segment_ct
    from clara_ray.render import (
        CT_BONE,
        Camera,
        prepare_volume,
        projection_image,
        render_volume,
        slice_image,
    )
    from clara_ray.render.windowing import BONE, SOFT_TISSUE
    from clara_ray.sample.phantom import generate_phantom
    from clara_ray.volume import Volume

    phantom = generate_phantom()
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    on_gpu = volume.with_array(cupy.asarray(phantom.hu))
    sync = cupy.cuda.Device().synchronize

    def host(image: Any) -> Any:
        return image.get() if hasattr(image, "get") else image

    with tempfile.TemporaryDirectory(prefix="clara-bench-gpu-") as tmp:
        cpu_ctx = _context(Path(tmp), ())
        gpu_ctx = _context(Path(tmp), (0,))
        first = _first_call(lambda: segment_ct(gpu_ctx, volume))
        seg_cpu = _ms(lambda: segment_ct(cpu_ctx, volume), repeats)
        seg_gpu = _ms(lambda: segment_ct(gpu_ctx, volume), repeats)

        def resident() -> None:
            segment_ct(gpu_ctx, on_gpu)
            sync()

        seg_resident = _ms(resident, repeats)

    segmentation = {
        **_compare(seg_cpu, seg_gpu),
        "gpu_resident_ms": spread(seg_resident),
        "speedup_resident": ratio_spread(seg_cpu, seg_resident),
        "gpu_first_call_ms": first,
    }

    prepared_cpu, prepared_gpu = prepare_volume(volume), prepare_volume(on_gpu)
    camera = Camera(azimuth=30.0, elevation=15.0)
    middle, coronal = volume.shape[0] // 2, volume.shape[1] // 2
    views: dict[str, Callable[[Volume, Volume], object]] = {
        "axial_slice": lambda v, p: slice_image(v, "axial", middle, SOFT_TISSUE),
        "coronal_slice": lambda v, p: slice_image(v, "coronal", coronal, SOFT_TISSUE),
        "mip_axial": lambda v, p: projection_image(v, "axial", BONE),
        "mip_coronal": lambda v, p: projection_image(v, "coronal", BONE),
        "render_3d_512": lambda v, p: render_volume(p, camera, CT_BONE, 512),
    }
    render: dict[str, Any] = {}
    for name, view in views.items():

        def on_cpu(view: Callable[[Volume, Volume], object] = view) -> object:
            return view(volume, prepared_cpu)

        def on_device(view: Callable[[Volume, Volume], object] = view) -> object:
            return host(view(on_gpu, prepared_gpu))

        first = _first_call(on_device)
        times = _compare(_ms(on_cpu, repeats), _ms(on_device, repeats))
        render[name] = {**times, "gpu_first_call_ms": first}

    model_path = ROOT / DEFAULT_MODEL_PATH
    cpu_model = TorchScriptModel.load(model_path, "cpu")
    gpu_model = TorchScriptModel.load(model_path, "cuda")
    first = _first_call(lambda: liver_mask(phantom.hu, gpu_model))
    liver_cpu = _ms(lambda: liver_mask(phantom.hu, cpu_model), repeats)
    liver_gpu = _ms(lambda: liver_mask(phantom.hu, gpu_model), repeats)

    return {
        "benchmark": "CPU vs GPU on the sample CT (120x512x512 int16, 2.5 x 0.7 x 0.7 mm)",
        "device": device,
        "repeats": repeats,
        "segment_ct": segmentation,
        "render": render,
        "liver_model": {**_compare(liver_cpu, liver_gpu), "gpu_first_call_ms": first},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
