"""The KServe v2 routes of one model, as its own Serve application answers them.

A model's application sits on route prefix ``/v2/models/<name>``, so the HTTP
proxy hands it every request for that model and nothing else; what follows the
prefix picks the route::

    GET  ""  | /versions/{v}                     model metadata
    GET  /ready  | /versions/{v}/ready            readiness
    GET  /config | /versions/{v}/config           the model's config (Triton's JSON form)
    POST /infer  | /versions/{v}/infer            inference

Plain code: the Serve deployment calls :func:`model_route` per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clara_ray.inference.errors import MethodNotAllowedError, RouteNotFoundError

__all__ = ["ModelRoute", "model_route", "relative_path"]

Action = Literal["metadata", "ready", "config", "infer"]

_METHODS: dict[Action, str] = {
    "metadata": "GET",
    "ready": "GET",
    "config": "GET",
    "infer": "POST",
}
_ACTIONS: dict[str, Action] = {
    "": "metadata",
    "ready": "ready",
    "config": "config",
    "infer": "infer",
}


@dataclass(frozen=True)
class ModelRoute:
    """What a request asks of a model: the action, and the version (None: the model's latest)."""

    action: Action
    version: str | None = None


def relative_path(path: str, root_path: str) -> str:
    """``path`` below the application's route prefix ``root_path``, without a trailing slash."""
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    return path.strip("/")


def model_route(method: str, path: str, model: str) -> ModelRoute:
    """The route of ``method`` on ``path`` (below ``/v2/models/<model>``); unknown ones raise.

    Raises:
        RouteNotFoundError: no route has this path (HTTP 404).
        MethodNotAllowedError: the route takes another method (HTTP 405).
    """
    parts = path.split("/") if path else []
    version: str | None = None
    if len(parts) >= 2 and parts[0] == "versions" and parts[1]:
        version, parts = parts[1], parts[2:]
    action = _ACTIONS.get("/".join(parts))
    if action is None:
        shown = f"/v2/models/{model}/{path}".rstrip("/")
        raise RouteNotFoundError(
            f"no route {shown}; model routes: /v2/models/{model}[/versions/<v>]"
            "[/ready|/config|/infer]"
        )
    expected = _METHODS[action]
    if method.upper() != expected and not (expected == "GET" and method.upper() == "HEAD"):
        raise MethodNotAllowedError(
            f"{method.upper()} is not allowed on the {action} route of model {model!r}; use {expected}"
        )
    return ModelRoute(action, version)
