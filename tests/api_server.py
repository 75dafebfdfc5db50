"""The REST API on Ray Serve in the session's Ray, over real HTTP on a free port, with a
Core (and, when asked, the render server) of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from clara_ray.config.settings import Settings
from tests.conftest import free_port

__all__ = ["Api", "api_server"]


@dataclass
class Api:
    http: httpx.Client
    url: str
    settings: Settings

    def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = self.http.request(method, path, **kwargs)
        assert answer.status_code == status, answer.text
        return answer.json()

    def detail(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        return self.json(method, path, status, **kwargs)["detail"]


@contextlib.contextmanager
def api_server(settings: Settings, app: str, *, render: bool = False) -> Iterator[Api]:
    """Serve the API app ``app`` over ``settings``; everything of theirs is gone afterwards."""
    import ray
    from ray import serve

    from clara_ray.platform import get_or_create_core
    from serve.api import build_app

    core = get_or_create_core(settings)
    ray.get(core.ping.remote())
    if render:
        from clara_ray.render.actor import get_or_create_render

        ray.get(get_or_create_render(settings).ping.remote())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"settings": settings}), name=app, route_prefix="/")
        token = settings.serve.api_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            yield Api(client, url, settings)
    finally:
        serve.shutdown()
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["namespace"] == settings.ray.namespace:
                with contextlib.suppress(ValueError):
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
