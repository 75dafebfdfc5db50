"""Deploying the platform's Ray Serve application, named by import path in the settings."""

from __future__ import annotations

import logging
from typing import Any

from clara_ray.config.settings import Settings

__all__ = ["API_APP_NAME", "INFERENCE_APP_NAME", "deploy_api", "serve_status"]

API_APP_NAME = "clara-api"
INFERENCE_APP_NAME = "clara-inference"
log = logging.getLogger(__name__)


def deploy_api(settings: Settings) -> None:
    """Start Serve's HTTP proxy on the configured port and run the API app (idempotent)."""
    from ray import serve
    from ray._common.utils import import_attr

    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    builder = import_attr(settings.serve.app)
    app = builder({"settings": settings.model_dump(mode="json")})
    serve.run(app, name=API_APP_NAME, route_prefix="/", blocking=False)
    log.info("HTTP API deployed at http://%s:%d/", settings.serve.host, settings.serve.port)
    repository = settings.serve.model_repository.expanduser().resolve()
    if settings.serve.inference_app and repository.is_dir():
        inference = import_attr(settings.serve.inference_app)(
            {
                "model_repository": str(repository),
                "skip_invalid_models": True,
                "num_cpus": settings.serve.inference_cpus,
            }
        )
        serve.run(inference, name=INFERENCE_APP_NAME, route_prefix="/v2", blocking=False)
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
