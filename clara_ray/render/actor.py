"""The ``clara-render`` actor: the render server, a thin wrapper of :class:`RenderService`.

Detached and restartable like the Core; it holds no state that storage does not
(its caches refill).  Threaded (``max_concurrency``) so a slow 3D view does not
hold up slice scrolling in another browser.  With ``render.num_gpus`` the actor
gets a GPU and moves every volume it loads there (cupy, the ``gpu`` extra), and
the same view functions run on it.  An actor given a GPU on which cupy cannot
run logs a warning saying why and renders on the CPU; ``ping`` tells which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import ray

from clara_ray.config.settings import Settings
from clara_ray.contracts.placement import RENDER_ACTOR_NAME, platform_actor
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.render.request import parse_view_request, parse_view_settings
from clara_ray.render.service import RenderService
from clara_ray.storage import Storage
from clara_ray.volume import CudaUnavailableError, Volume, cuda_array_module

__all__ = ["RenderActor", "get_or_create_render", "volume_mover"]

log = logging.getLogger(__name__)
_MIB = 1024 * 1024


def volume_mover(gpu_ids: Sequence[Any]) -> Callable[[Volume], Volume] | None:
    """Moves volumes to the GPU (cupy) when ``gpu_ids`` names one and cupy runs on it.

    None (views on the CPU) without a GPU, or with one that cupy cannot use:
    then a warning says why.
    """
    if not gpu_ids:
        return None
    try:
        cupy = cuda_array_module()
    except CudaUnavailableError as exc:
        log.warning("render server: assigned GPU %s but %s; rendering on CPU", list(gpu_ids), exc)
        return None

    def to_device(volume: Volume) -> Volume:
        return volume.with_array(cupy.asarray(volume.array))

    return to_device


class RenderActor:
    def __init__(self, settings: Settings) -> None:
        keep_patient_data_out_of_logs()
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        to_device = volume_mover(self.gpu_ids)
        self.on_gpu = to_device is not None
        self.service = RenderService(
            Storage(settings.storage),
            cache_bytes=settings.render.cache_mb * _MIB,
            image_cache_bytes=settings.render.image_cache_mb * _MIB,
            to_device=to_device,
        )
        log.info("render server started (%s)", "GPU" if self.on_gpu else "CPU")

    def ping(self) -> dict[str, Any]:
        """``gpu``: whether views are computed on the GPU; ``gpu_ids``: the GPUs Ray assigned."""
        return {
            "gpu": self.on_gpu,
            "gpu_ids": self.gpu_ids,
            "cached_bytes": self.service.volumes_cache.nbytes,
        }

    def volumes(self, job_id: str, payload_id: str, final: bool) -> list[dict[str, Any]]:
        return self.service.volumes(job_id, payload_id, final=final)

    def render(
        self,
        job_id: str,
        payload_id: str,
        volume: str,
        view: str,
        params: dict[str, str],
        final: bool,
    ) -> bytes:
        request = parse_view_request(view, params)
        return self.service.render(job_id, payload_id, volume, request, final=final)

    def save_view_settings(
        self, job_id: str, payload_id: str, volume: str, settings: dict[str, Any], final: bool
    ) -> dict[str, Any]:
        parsed = parse_view_settings(settings)
        self.service.save_view_settings(job_id, payload_id, volume, parsed, final=final)
        return parsed.model_dump()


RenderActorRemote = ray.remote(RenderActor)


def get_or_create_render(settings: Settings) -> Any:
    """The namespace's render server, created (detached, restartable) if absent."""
    return RenderActorRemote.options(
        **platform_actor(RENDER_ACTOR_NAME, settings.ray.namespace),
        num_cpus=settings.render.num_cpus,
        num_gpus=settings.render.num_gpus,
        max_concurrency=4,
    ).remote(settings)
