"""Starting, finding and stopping the platform: a Ray instance plus the Core actor.

With ``ray.address: local`` the platform starts its own Ray head on this
machine (``ray start --head`` with the configured ports) and records its
address under ``<data_dir>/run/ray.json``; later commands find it there.
Any other address joins an existing cluster (KubeRay, ``ray start``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import ray

from clara_ray.client import PlatformClient
from clara_ray.core.actor import CORE_ACTOR_NAME, get_or_create_core
from clara_ray.errors import ClaraError, PlatformNotRunningError
from clara_ray.settings import Settings

__all__ = ["connect", "down", "local_ray_info", "status", "up"]

log = logging.getLogger(__name__)
_STATE_FILE = "ray.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def local_ray_info(settings: Settings) -> dict[str, Any] | None:
    """What ``up`` recorded about the local Ray head, if it is still reachable."""
    path = settings.run_dir / _STATE_FILE
    if not path.exists():
        return None
    info: dict[str, Any] = json.loads(path.read_text())
    host, port = info["address"].rsplit(":", 1)
    return info if _port_open(host, int(port)) else None


def _start_local_ray(settings: Settings) -> dict[str, Any]:
    cfg = settings.ray
    if _port_open("127.0.0.1", cfg.gcs_port):
        raise ClaraError(
            f"port {cfg.gcs_port} (setting ray.gcs_port) is in use by another process; "
            "choose another port or stop that process"
        )
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={cfg.gcs_port}",
        f"--dashboard-host={cfg.dashboard_host}",
        f"--dashboard-port={cfg.dashboard_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        "--disable-usage-stats",
    ]
    if cfg.num_cpus is not None:
        cmd.append(f"--num-cpus={cfg.num_cpus}")
    if cfg.num_gpus is not None:
        cmd.append(f"--num-gpus={cfg.num_gpus}")
    if cfg.object_store_memory is not None:
        cmd.append(f"--object-store-memory={cfg.object_store_memory}")
    # The head's job supervisor runs `ray job submit` entrypoints: put this environment's
    # interpreter first on its PATH, so `python -m clara_ray.run` finds clara-ray.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ClaraError(f"`ray start --head` failed (exit {proc.returncode}):\n{tail}")
    info = {
        "address": f"127.0.0.1:{cfg.gcs_port}",
        "dashboard_url": f"http://{cfg.dashboard_host}:{cfg.dashboard_port}",
        "auth": "token",
        "started_at": time.time(),
    }
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / _STATE_FILE).write_text(json.dumps(info, indent=2))
    return info


def _stop_local_head(gcs_port: int, grace: float = 10.0) -> int:
    """Stop the processes of the local Ray cluster on ``gcs_port`` and their children.

    Unlike ``ray stop``, other Ray clusters on the machine are left alone: the
    cluster is found by its GCS port and its session folder in command lines.
    """
    port = re.compile(rf"[:=]{gcs_port}(\s|$)")
    commands = {}
    for proc in psutil.process_iter(["cmdline"]):
        commands[proc] = " ".join(proc.info["cmdline"] or [])
    roots = {p for p, cmd in commands.items() if port.search(cmd)}
    sessions = {s for p in roots for s in re.findall(r"session_[0-9_-]+", commands[p])}
    roots |= {p for p, cmd in commands.items() if any(s in cmd for s in sessions)}
    procs = set(roots)
    for root in roots:
        try:
            procs.update(root.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    procs = {p for p in procs if p.pid != os.getpid()}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _gone, alive = psutil.wait_procs(list(procs), timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)


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


def _init(address: str, settings: Settings) -> None:
    if ray.is_initialized():
        return
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


def up(settings: Settings) -> dict[str, Any]:
    """Start what is missing (local Ray head, Core actor, HTTP API) and return the status."""
    if settings.ray.address == "local" and local_ray_info(settings) is None:
        _start_local_ray(settings)
    _init(_address(settings), settings)
    core = get_or_create_core(settings)
    ray.get(core.ping.remote(), timeout=120)
    if settings.dicom.enabled:
        from clara_ray.dicom.actors import get_or_create_adapter

        ray.get(get_or_create_adapter(settings).status.remote(), timeout=120)
    if settings.serve.enabled:
        from clara_ray.serving import deploy_api

        deploy_api(settings)
    return status(settings)


def down(settings: Settings) -> dict[str, Any]:
    """Stop the platform: the whole local Ray head if ``up`` started it, else (on a shared
    cluster) the HTTP API and the platform's actors."""
    if settings.ray.address == "local":
        if local_ray_info(settings) is None:
            return {"stopped": []}
        count = _stop_local_head(settings.ray.gcs_port)
        (settings.run_dir / _STATE_FILE).unlink(missing_ok=True)
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
