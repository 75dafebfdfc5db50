"""The GPU paths through Ray, in a process of its own: ``python -m tests.gpu.ray_checks OUT``.

It starts a local Ray with ``num_gpus=1`` (the suite's session Ray declares
fake GPUs, and a process holds one Ray instance), then runs, each on a GPU
and again on the CPU where there is a result to compare:

* a task with ``num_gpus=1``: what it sees (``ray.get_gpu_ids()``,
  ``CUDA_VISIBLE_DEVICES``, torch's and cupy's devices);
* ``segment_ct`` and ``segment_liver`` through the platform's operator task,
  their operator logs (which name the device) read back from storage;
* the render server actor with ``num_gpus=1`` (its ``ping``);
* the Serve inference application of ``serve/inference.py`` (``liver-seg``
  asks for one GPU per replica): the replica's stats and one inference.

Arrays go to ``OUT/arrays.npz`` and the rest to ``OUT/result.json``; the
tests in ``test_ray_gpu.py`` compare them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
APP = "clara-inference"
SEG_SHAPE = (40, 256, 256)
LIVER_SHAPE = (24, 256, 256)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe() -> dict[str, Any]:
    """What a task sees of its GPU (run with num_gpus=1)."""
    import ray
    import torch

    from clara_ray.volume import CudaUnavailableError, cuda_array_module

    try:
        cupy = cuda_array_module()
        cupy_devices, cupy_error = int(cupy.cuda.runtime.getDeviceCount()), ""
    except CudaUnavailableError as exc:
        cupy_devices, cupy_error = 0, str(exc)
    return {
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_cuda": bool(torch.cuda.is_available()),
        "torch_devices": int(torch.cuda.device_count()),
        "torch_device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "cupy_devices": cupy_devices,
        "cupy_error": cupy_error,
    }


def _operator(
    storage_uri: str, name: str, run: str, args: dict[str, Any], volume: Any, num_gpus: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """One operator through :func:`operator_task`: its labels and the task's metadata."""
    import ray

    from clara_ray.runner.execute import OperatorCall
    from clara_ray.runner.task import operator_task

    call = OperatorCall(
        job_id="job-gpu",
        job_name="gpu-checks",
        pipeline="gpu-checks",
        operator=name,
        run=run,
        args=args,
        input_names=("volume",),
        payload_inputs=(),
        output_names=("labels",),
        storage_uri=storage_uri,
        payload_id="payload-1",
    )
    ref = operator_task.options(num_gpus=num_gpus).remote(call, None, volume)
    labels, meta = ray.get(ref, timeout=600)
    return np.asarray(labels.array), meta


def _operators(out: Path, results: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    import ray

    from clara_ray.operators.ai_segmentation import DEFAULT_MODEL_PATH
    from clara_ray.sample.phantom import generate_phantom
    from clara_ray.storage import Storage
    from clara_ray.volume import Volume

    storage = Storage(str(out / "storage"))
    source = out / "payload"
    source.mkdir(exist_ok=True)
    (source / "dummy.dcm").write_bytes(b"\0")
    storage.upload_payload("payload-1", source)
    storage.seal_payload("payload-1")

    ct = generate_phantom(*SEG_SHAPE, spacing=(2.5, 1.4, 1.4))
    ct_ref = ray.put(Volume(ct.hu, spacing=ct.spacing))
    liver = generate_phantom(*LIVER_SHAPE, spacing=(3.0, 1.4, 1.4), seed=3)
    liver_ref = ray.put(Volume(liver.hu, spacing=liver.spacing))
    model = {"model_path": str(ROOT / DEFAULT_MODEL_PATH)}
    runs = {
        "segment_ct": ("clara_ray.operators.segmentation:segment_ct", {}, ct_ref),
        "segment_liver": ("clara_ray.operators.ai_segmentation:segment_liver", model, liver_ref),
    }
    for key, (run, args, ref) in runs.items():
        for device, num_gpus in (("gpu", 1), ("cpu", 0)):
            name = f"{key.replace('_', '-')}-{device}"
            labels, meta = _operator(storage.uri, name, run, args, ref, num_gpus)
            arrays[f"{key}_{device}"] = labels
            results[f"{key}_{device}"] = {
                "gpu_ids": [str(g) for g in meta["gpu_ids"]],
                "log": storage.read_logs("job-gpu", name).get(name, ""),
            }


def _render_actor(out: Path, results: dict[str, Any]) -> None:
    import ray

    from clara_ray.config.settings import load_settings
    from clara_ray.render.actor import RenderActorRemote

    settings = load_settings(env={"CLARA_RAY_DATA_DIR": str(out / "data")})
    actor: Any = RenderActorRemote.options(num_gpus=1, num_cpus=0).remote(settings)
    try:
        results["render_ping"] = ray.get(actor.ping.remote(), timeout=120)
    finally:
        ray.kill(actor)


def _serve(results: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    from ray import serve

    from clara_ray.inference.clients import deployment_name, model_app_name
    from clara_ray.operators.ai_segmentation import to_working_grid
    from clara_ray.sample.phantom import generate_phantom
    from serve.inference import deploy
    from serve.inference_args import InferenceAppArgs

    x = to_working_grid(generate_phantom(8, 256, 256, spacing=(3.0, 1.4, 1.4), seed=5).hu)
    batch = x.numpy()
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    try:
        args = InferenceAppArgs(
            model_repository=str(ROOT / "models"),
            models=["liver-seg"],
            num_cpus=0,
            gpu_fallback=False,
        )
        deploy(args, name=APP, route_prefix="/v2")
        handle = serve.get_deployment_handle(
            deployment_name("liver-seg"), app_name=model_app_name(APP, "liver-seg")
        )
        output = handle.infer.remote({"INPUT__0": batch}).result(timeout_s=300)
        results["serve_stats"] = handle.stats.remote().result(timeout_s=60)
        arrays["serve_input"] = batch
        arrays["serve_output"] = np.asarray(output["OUTPUT__0"])
    finally:
        serve.shutdown()


def main(out: Path) -> None:
    import ray

    from clara_ray.auth_token import ensure_local_token

    out.mkdir(parents=True, exist_ok=True)
    ensure_local_token()
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=1,
        object_store_memory=500 * 1024 * 1024,
        include_dashboard=False,
        namespace="clara-gpu-checks",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    results: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    try:
        results["task"] = ray.get(ray.remote(num_gpus=1)(_probe).remote(), timeout=300)
        _operators(out, results, arrays)
        _render_actor(out, results)
        _serve(results, arrays)
    finally:
        np.savez_compressed(out / "arrays.npz", **cast(dict[str, Any], arrays))
        (out / "result.json").write_text(json.dumps(results, indent=2, default=str))
        ray.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.gpu.ray_checks OUT_DIR")
    main(Path(sys.argv[1]))
