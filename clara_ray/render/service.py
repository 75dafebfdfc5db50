"""The render server: a job's volumes and their views as PNG, with caches and saved views.

Plain code; the ``clara-render`` actor (:mod:`clara_ray.render.actor`) wraps it.
Volumes are read from storage (:mod:`clara_ray.render.sources`) when a view
first needs them and kept in an LRU bounded in bytes (``render.cache_mb``);
3D views use a prepared (downsampled, float32) copy kept in the same cache, and
a DICOM SEG is read onto each series it overlays and kept there per series.
Encoded views are kept too (``render.image_cache_mb``), keyed by everything the
request names, so scrolling back over slices costs a dictionary lookup.  A
job's volume listing is kept once the job has stopped (its results no longer
change).  When the server has a GPU, volumes are moved to it and every view is
computed with cupy by the same functions.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from clara_ray.errors import NotFoundError
from clara_ray.render.cache import ByteLRUCache
from clara_ray.render.orientation import AXES, axis_length
from clara_ray.render.overlay import blend_labels, segment_colour
from clara_ray.render.png import encode_png
from clara_ray.render.projection import Slab, label_projection, projection_image
from clara_ray.render.raycast import TRANSFER_PRESETS, Camera, prepare_volume, render_volume
from clara_ray.render.request import ViewRequest, ViewSettings
from clara_ray.render.slices import label_slice, slice_image
from clara_ray.render.sources import (
    VolumeSource,
    find_volumes,
    load_volume,
    references_image,
    same_grid,
)
from clara_ray.render.windowing import PRESETS, parse_window
from clara_ray.storage import Storage
from clara_ray.volume import Volume, array_module

__all__ = ["RenderService"]

log = logging.getLogger(__name__)

_DEFAULT_PRESET = "soft_tissue"


def _nbytes(volume: Volume) -> int:
    return int(volume.array.nbytes)


def _host(image: Any) -> np.ndarray:
    return image.get() if array_module(image) is not np else image


class RenderService:
    """Views of the volumes of jobs.

    Args:
        storage: where payloads and results are.
        cache_bytes: memory for volumes kept between views.
        image_cache_bytes: memory for encoded views.
        to_device: moves a loaded volume to where views are computed (the GPU);
            default: leaves it on the host.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        cache_bytes: int,
        image_cache_bytes: int,
        to_device: Callable[[Volume], Volume] | None = None,
    ) -> None:
        self.storage = storage
        self.volumes_cache = ByteLRUCache(cache_bytes)
        self.images_cache = ByteLRUCache(image_cache_bytes)
        self._to_device = to_device or (lambda v: v)
        self._listings: dict[str, list[VolumeSource]] = {}
        self._loading = threading.Lock()

    # -- volumes ---------------------------------------------------------------
    def _sources(self, job_id: str, payload_id: str, final: bool) -> list[VolumeSource]:
        listing = self._listings.get(job_id)
        if listing is None:
            listing = find_volumes(self.storage, job_id, payload_id)
            if final:
                self._listings[job_id] = listing
        return listing

    def _source(self, job_id: str, payload_id: str, name: str, final: bool) -> VolumeSource:
        sources = self._sources(job_id, payload_id, final)
        for source in sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in sources) or "none"
        raise NotFoundError(f"job {job_id} has no volume {name!r} (volumes: {known})")

    def _loaded(self, key: tuple[str, ...], load: Callable[[], Volume]) -> Volume:
        volume: Volume | None = self.volumes_cache.get(key)
        if volume is None:
            with self._loading:  # one reader per volume; others wait for the cache
                volume = self.volumes_cache.get(key)
                if volume is None:
                    volume = self._to_device(load())
                    self.volumes_cache.put(key, volume, _nbytes(volume))
        return volume

    def _volume(self, job_id: str, payload_id: str, source: VolumeSource) -> Volume:
        return self._loaded(
            ("volume", job_id, source.name),
            lambda: load_volume(self.storage, payload_id, source),
        )

    def _overlay(
        self,
        job_id: str,
        payload_id: str,
        labels: VolumeSource,
        image_source: VolumeSource,
        image: Volume,
    ) -> Volume | None:
        """``labels`` voxel for voxel on ``image``'s grid; None when it does not overlay it.

        A SEG is read onto each series it references and kept per series."""
        if labels.kind != "labels":
            return None
        if labels.format == "seg":
            if not references_image(labels, image):
                return None
            volume = self._loaded(
                ("labels", job_id, labels.name, image_source.name),
                lambda: load_volume(self.storage, payload_id, labels, image),
            )
        else:
            volume = self._volume(job_id, payload_id, labels)
        return volume if same_grid(image, volume) else None

    def _overlays(
        self,
        job_id: str,
        payload_id: str,
        labels: VolumeSource,
        image_source: VolumeSource,
        image: Volume,
    ) -> bool:
        """Whether ``labels`` overlays ``image``, for the listing: a label map that cannot be
        read onto it (a malformed SEG) is left out with a log line, not fatal to the list."""
        try:
            return self._overlay(job_id, payload_id, labels, image_source, image) is not None
        except ValueError as exc:
            log.warning(
                "job %s: %s does not overlay %s: %s", job_id, labels.name, image_source.name, exc
            )
            return False

    def _prepared(self, job_id: str, payload_id: str, source: VolumeSource) -> Volume:
        key = ("prepared", job_id, source.name)
        prepared: Volume | None = self.volumes_cache.get(key)
        if prepared is None:
            prepared = prepare_volume(self._volume(job_id, payload_id, source))
            self.volumes_cache.put(key, prepared, _nbytes(prepared))
        return prepared

    def volumes(self, job_id: str, payload_id: str, *, final: bool) -> list[dict[str, Any]]:
        """The job's volumes: images with their length along each axis, the label maps
        that overlay them, their segments with colours, and each volume's saved view."""
        sources = self._sources(job_id, payload_id, final)
        labels = [s for s in sources if s.kind == "labels"]
        out = []
        for source in sources:
            entry = source.to_dict()
            entry["segments"] = [
                {**seg, "color": list(segment_colour(seg["value"]))} for seg in entry["segments"]
            ]
            if source.kind == "image":
                volume = self._volume(job_id, payload_id, source)
                entry["shape"] = list(volume.shape)
                entry["spacing"] = [float(s) for s in volume.spacing]
                entry["lengths"] = {axis: axis_length(volume, axis) for axis in AXES}
                entry["overlays"] = [
                    s.name for s in labels if self._overlays(job_id, payload_id, s, source, volume)
                ]
            entry["settings"] = self.view_settings(job_id, source.name)
            out.append(entry)
        return out

    # -- views -----------------------------------------------------------------
    def render(
        self, job_id: str, payload_id: str, volume: str, request: ViewRequest, *, final: bool
    ) -> bytes:
        """The PNG of one view; ``ValueError`` naming the parameter for a bad request."""
        key = ("png", job_id, volume, request.cache_key())
        cached: bytes | None = self.images_cache.get(key)
        if cached is not None:
            return cached
        source = self._source(job_id, payload_id, volume, final)
        if request.view == "3d":
            image = self._render_3d(job_id, payload_id, source, request)
        else:
            image = self._render_2d(job_id, payload_id, source, request, final)
        png = encode_png(_host(image))
        self.images_cache.put(key, png, len(png))
        return png

    def _render_3d(
        self, job_id: str, payload_id: str, source: VolumeSource, request: ViewRequest
    ) -> Any:
        transfer = TRANSFER_PRESETS[request.preset or "ct_bone"]
        camera = Camera(azimuth=request.azimuth, elevation=request.elevation)
        prepared = self._prepared(job_id, payload_id, source)
        return render_volume(prepared, camera, transfer, request.size)

    def _render_2d(
        self,
        job_id: str,
        payload_id: str,
        source: VolumeSource,
        request: ViewRequest,
        final: bool,
    ) -> Any:
        volume = self._volume(job_id, payload_id, source)
        if request.window is not None:
            window = parse_window(width=request.window, level=request.level)
        else:
            window = PRESETS[request.preset or _DEFAULT_PRESET]
        length = axis_length(volume, request.axis)
        index = length // 2 if request.index is None else request.index
        if request.view == "slice":
            grey = slice_image(volume, request.axis, index, window)
        else:
            mode = "max" if request.view == "mip" else "min"
            slab = Slab(index, request.slab) if request.slab else None
            grey = projection_image(volume, request.axis, window, mode, slab)
        if request.overlay is None:
            return grey
        labels_source = self._source(job_id, payload_id, request.overlay, final)
        labels = self._overlay(job_id, payload_id, labels_source, source, volume)
        if labels is None:
            raise ValueError(
                f"overlay: {request.overlay!r} is not a label map on the grid of {source.name}"
            )
        if request.view == "slice":
            label_image = label_slice(labels, request.axis, index)
        else:
            label_image = label_projection(volume, labels, request.axis, mode, slab)
        return blend_labels(grey, label_image, opacity=request.opacity, segments=request.segments)

    # -- saved views -----------------------------------------------------------
    def view_settings(self, job_id: str, volume: str) -> dict[str, Any] | None:
        try:
            data = self.storage.read_bytes(self.storage.view_settings_path(job_id, volume))
        except NotFoundError:
            return None
        return ViewSettings.model_validate_json(data).model_dump()

    def save_view_settings(
        self,
        job_id: str,
        payload_id: str,
        volume: str,
        settings: ViewSettings,
        *,
        final: bool,
    ) -> None:
        self._source(job_id, payload_id, volume, final)
        path = self.storage.view_settings_path(job_id, volume)
        self.storage.write_bytes(path, json.dumps(settings.model_dump()).encode())
