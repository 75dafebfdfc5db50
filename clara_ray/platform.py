"""Starting, finding and stopping the platform: a Ray instance plus the Core actor.

With ``ray.address: local`` the platform starts its own Ray head on this
machine (``ray start --head`` with the configured ports) and records its
address under ``<data_dir>/run/ray.json``; later commands find it there.
Any other address joins an existing cluster (KubeRay, ``ray start``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.exceptions import RayError

from clara_ray import auth_token, local_head
from clara_ray.client import PlatformClient
from clara_ray.config.settings import Settings
from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.core.actor import create_core
from clara_ray.errors import ClaraError, NotFoundError, PlatformNotRunningError
from clara_ray.runner.launcher import RayRunnerLauncher

__all__ = [
    "connect",
    "down",
    "get_or_create_core",
    "local_ray_info",
    "reference_pipeline_files",
    "status",
    "up",
]

log = logging.getLogger(__name__)
local_ray_info = local_head.head_info


def _address(settings: Settings) -> str:
    if settings.ray.address != "local":
        return settings.ray.address
    info = local_ray_info(settings)
    if info is None:
        raise PlatformNotRunningError(
            f"no clara-ray platform is running for data directory {settings.data_dir}; "
            "start it with `clara-ray up` (or `make run`)"
        )
    return str(info["address"])


def _runner_launcher(settings: Settings) -> RayRunnerLauncher:
    launcher = RayRunnerLauncher(settings)
    launcher.host()  # started now, so that the first job need not wait for its process
    return launcher


def get_or_create_core(settings: Settings) -> Any:
    """The namespace's Core actor, created (detached, restartable) if absent, running its
    jobs in the runner host."""
    return create_core(settings, _runner_launcher)


def _init(address: str, settings: Settings) -> None:
    if ray.is_initialized():
        return
    if settings.ray.address != "local":
        auth_token.require_token(address)
    ray.init(
        address=address,
        namespace=settings.ray.namespace,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )


def connect(settings: Settings) -> PlatformClient:
    """A client of the running platform (initialising Ray in this process if needed)."""
    _init(_address(settings), settings)
    return PlatformClient.connect(settings)


def reference_pipeline_files() -> list[Path]:
    """The shipped reference pipelines (``pipelines/*.yaml``), found without importing them."""
    spec = importlib.util.find_spec("pipelines")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sorted(folder.glob("*.yaml"))


def _register_reference_pipelines(client: PlatformClient) -> list[str]:
    """Store each reference pipeline that no pipeline of the same name replaces yet."""
    registered = []
    for path in reference_pipeline_files():
        name = str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name", ""))
        try:
            client.core.get_pipeline(name)
            continue
        except NotFoundError:
            pass
        try:
            registered.append(client.create_pipeline(path).name)
        except ClaraError as exc:  # one broken file must not keep the platform from starting
            log.warning("reference pipeline %s not registered: %s", path, exc)
    return registered


def up(settings: Settings) -> dict[str, Any]:
    """Start what is missing (local Ray head, Core actor, DICOM adapter, render server, HTTP
    API) and return the status."""
    token = None
    if settings.ray.address == "local":
        token = auth_token.ensure_local_token()
        if local_ray_info(settings) is None:
            local_head.start_head(settings, "token" if token else "disabled")
    _init(_address(settings), settings)
    core = get_or_create_core(settings)
    ray.get(core.ping.remote(), timeout=120)
    registered = (
        _register_reference_pipelines(PlatformClient.of_actor(settings, core))
        if settings.core.register_reference_pipelines
        else []
    )
    if settings.dicom.enabled:
        from clara_ray.dicom.actors import get_or_create_adapter

        ray.get(get_or_create_adapter(settings).status.remote(), timeout=120)
    if settings.render.enabled:
        from clara_ray.render.actor import get_or_create_render

        ray.get(get_or_create_render(settings).ping.remote(), timeout=120)
    if settings.serve.enabled:
        from clara_ray.serving import deploy_api

        deploy_api(settings)
    out = status(settings)
    out["auth_token"] = (
        {"source": token.source, "created": token.created} if token is not None else None
    )
    out["pipelines_registered"] = registered
    return out


def down(settings: Settings) -> dict[str, Any]:
    """Stop the platform: the local Ray head if ``up`` started it (its processes only), else
    (on a shared cluster) the HTTP API and the platform's actors. The auth token stays."""
    if settings.ray.address == "local":
        if local_head.recorded_head(settings) is None:
            return {"stopped": []}
        count = local_head.stop_head(settings)
        return {"stopped": ["ray"], "processes": count}
    stopped: list[str] = []
    _init(_address(settings), settings)
    if settings.serve.enabled:
        from ray import serve

        serve.shutdown()
        stopped.append("serve")
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == settings.ray.namespace and actor["name"].startswith("clara-"):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
            except ValueError:  # it exited meanwhile
                continue
            stopped.append(actor["name"])
    ray.shutdown()
    return {"stopped": stopped}


def status(settings: Settings) -> dict[str, Any]:
    info = local_ray_info(settings) if settings.ray.address == "local" else None
    out: dict[str, Any] = {
        "running": False,
        "ray_address": info["address"] if info else settings.ray.address,
        "namespace": settings.ray.namespace,
        "data_dir": str(settings.data_dir),
        "storage": settings.storage,
        "dashboard_url": info["dashboard_url"] if info else None,
        "actors": [],
        "serve": None,
    }
    try:
        _init(_address(settings), settings)
    except PlatformNotRunningError:
        return out
    actors = [
        {"name": a["name"], "namespace": a["namespace"]}
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == settings.ray.namespace
    ]
    out["actors"] = sorted(actors, key=lambda a: a["name"])
    out["running"] = any(a["name"] == CORE_ACTOR_NAME for a in actors)
    if out["dashboard_url"] is None:
        out["dashboard_url"] = ray.worker.get_dashboard_url() or None
    if settings.serve.enabled:
        from clara_ray.serving import serve_status

        out["serve"] = serve_status(settings)
    out["dicom"] = _dicom_status(settings)
    out["scheduling"] = _scheduling_status(settings) if out["running"] else None
    return out


def _scheduling_status(settings: Settings) -> dict[str, Any]:
    """The cluster the Core admits jobs onto, and who may evict."""
    out: dict[str, Any] = {
        "capacity": None,
        "max_concurrent_jobs": settings.core.max_concurrent_jobs,
        "evicting_priorities": list(settings.scheduling.evicting_priorities),
    }
    try:
        core = ray.get_actor(CORE_ACTOR_NAME, namespace=settings.ray.namespace)
        ping: dict[str, Any] = ray.get(core.ping.remote(), timeout=10)  # type: ignore[assignment]
        out["capacity"] = ping.get("capacity")
    except (ValueError, RayError) as exc:
        log.warning("the Core did not say what the cluster holds: %s", exc)
    return out


def _dicom_status(settings: Settings) -> dict[str, Any]:
    d = settings.dicom
    out: dict[str, Any] = {
        "enabled": d.enabled,
        "host": d.host,
        "port": d.port,
        "ae_title": d.ae_title,
        "running": False,
    }
    if not d.enabled:
        return out
    from clara_ray.dicom.actors import ADAPTER_NAME

    try:
        adapter = ray.get_actor(ADAPTER_NAME, namespace=settings.ray.namespace)
        out.update(ray.get(adapter.status.remote(), timeout=30), running=True)
    except (ValueError, ray.exceptions.RayError) as exc:
        out["error"] = str(exc).splitlines()[0]
    return out
