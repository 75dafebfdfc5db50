"""Deploying the platform's Ray Serve application, named by import path in the settings."""

from __future__ import annotations

import ipaddress
import logging
import tempfile
from pathlib import Path
from typing import Any

from clara_ray.config.settings import ServeSettings, Settings
from clara_ray.errors import ConfigError

__all__ = [
    "API_APP_NAME",
    "INFERENCE_APP_NAME",
    "check_bind",
    "deploy_api",
    "ingress_env",
    "is_loopback",
    "serve_status",
]

API_APP_NAME = "clara-api"
INFERENCE_APP_NAME = "clara-inference"
log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``.

    Any other name or address (``0.0.0.0``, ``::``, a LAN address, a host name) may be
    reachable from other machines.
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_HAPROXY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
"""Ray's throughput settings for Serve: HAProxy in front, each application's ingress replica
serving HTTP itself (direct ingress), gRPC between deployments, user code on the replica's
event loop, request logs buffered.  A stopping replica is kept 2 s (Ray's default, 30 s, is
for cloud load balancers) for HAProxy to drop it."""


def ingress_env(serve_settings: ServeSettings) -> dict[str, str]:
    """Environment of the Ray processes for ``serve.ingress`` (read when Ray starts).

    HAProxy's files go to ``<tmp>/clara-haproxy-<serve.port>``: one platform per port, and a
    short path, as the admin socket's (which HAProxy nests one hash deeper) must stay
    under the 108 bytes of a Unix socket address.
    """
    if serve_settings.ingress != "haproxy":
        return {}
    files = Path(tempfile.gettempdir()) / f"clara-haproxy-{serve_settings.port}"
    return {
        **_HAPROXY_ENV,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(files / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(files / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(files / "server-state"),
    }


def check_bind(serve_settings: ServeSettings) -> None:
    """Refuse to serve HTTP beyond this machine without an API token (ConfigError)."""
    if serve_settings.api_token is None and not is_loopback(serve_settings.host):
        raise ConfigError(
            f"key 'serve.host' is {serve_settings.host!r}, an address other machines can "
            "reach, and no API token is set: the API would give anyone on the network the "
            "platform's patient data, so it does not start (as Orthanc refuses remote access "
            "without authentication). Set serve.api_token in the settings file or "
            "CLARA_RAY_SERVE__API_TOKEN (e.g. `openssl rand -hex 32`), or bind serve.host "
            "to 127.0.0.1"
        )


def deploy_api(settings: Settings) -> None:
    """Start Serve's HTTP proxy on the configured port and run the API app (idempotent).

    Refuses (ConfigError) a non-loopback ``serve.host`` without ``serve.api_token``.
    """
    check_bind(settings.serve)
    from ray import serve
    from ray._common.utils import import_attr

    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    builder = import_attr(settings.serve.app)
    app = builder({"settings": settings})
    serve.run(app, name=API_APP_NAME, route_prefix="/", blocking=False)
    log.info("HTTP API deployed at http://%s:%d/", settings.serve.host, settings.serve.port)
    repository = settings.serve.model_repository.expanduser().resolve()
    if settings.serve.inference_app and repository.is_dir():
        import_attr(settings.serve.inference_app)(
            {
                "model_repository": str(repository),
                "skip_invalid_models": True,
                "num_cpus": settings.serve.inference_cpus,
                "api_token": settings.serve.api_token,
            },
            name=INFERENCE_APP_NAME,
            route_prefix="/v2",
        )
        log.info(
            "inference (KServe v2) deployed at http://%s:%d/v2 from %s",
            settings.serve.host,
            settings.serve.port,
            repository,
        )
    elif settings.serve.inference_app:
        log.warning(
            "model repository %s not found (setting serve.model_repository): "
            "inference app not deployed",
            repository,
        )


def serve_status(settings: Settings) -> dict[str, Any]:
    from ray import serve

    try:
        st = serve.status()
    except Exception as exc:  # Serve not started: report it, do not fail `status`
        return {"url": None, "applications": [], "error": str(exc)}
    apps = [
        {"name": name, "status": getattr(app.status, "value", str(app.status))}
        for name, app in st.applications.items()
    ]
    return {"url": f"http://{settings.serve.host}:{settings.serve.port}/", "applications": apps}
