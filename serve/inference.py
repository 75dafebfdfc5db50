"""Model inference as Ray Serve applications speaking KServe v2 / Triton's HTTP protocol.

Two kinds of application, so that an inference request crosses one deployment only:

- ``clara-inference`` on route prefix ``/v2`` (:func:`build_app`): the server's
  routes (metadata, health, the repository index, the model configs), and an
  answer for a model whose application is not running;
- one application per model, ``clara-inference-<model>`` on
  ``/v2/models/<model>`` (:func:`build_model_app`): its ingress is the model's
  deployment ``model-<model>`` (:mod:`serve.model_deployment`), which answers
  the model's routes (metadata, ready, config, infer) and batches requests.

The HTTP proxy routes by the longest prefix, so
``tritonclient.http.InferenceServerClient("host:8000")`` works unchanged.
:func:`deploy` runs them all from Python; a Serve config lists them (``serve run
serve/inference.yaml``, ``serve deploy``, a RayService).  Routes (relative to ``/v2``;
KServe v2 plus Triton's config and repository index):

    GET  /v2                                       server metadata
    GET  /v2/health/live    GET /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]             model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready
    GET  /v2/models/{m}[/versions/{v}]/config      the model's config (Triton's JSON form)
    POST /v2/models/{m}[/versions/{v}]/infer       JSON tensors or the binary tensor extension
    POST /v2/repository/index

A model deployment's replicas and ``num_gpus`` per replica come from the model's
``config.pbtxt`` (fractional through ``parameters { key: "clara_gpu" ... }``),
``@serve.batch`` batches dynamically counted in rows, autoscaling from the
arguments, ``check_health``.  Pipelines call the same deployments through
:class:`clara_ray.inference.clients.ServeClient`.  The arguments are
:class:`serve.inference_args.InferenceAppArgs`, plus the API token (``api_token``):
with one, every route but ``/v2/health/live`` and ``/v2/health/ready`` needs
``Authorization: Bearer <token>`` (:mod:`serve.auth`).
"""

import asyncio
import importlib.metadata
import logging
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import SecretStr
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from clara_ray.config.settings import load_settings
from clara_ray.inference.clients import deployment_name, model_app_name, model_route_prefix
from clara_ray.inference.errors import (
    InferenceError,
    ModelNotReadyError,
    ModelRepositoryError,
    UnknownModelError,
)
from clara_ray.inference.metrics import InferenceMetrics
from clara_ray.inference.repository import ModelEntry, ModelRepository
from clara_ray.phi import keep_patient_data_out_of_logs
from serve.auth import BearerAuth
from serve.inference_args import InferenceAppArgs, ModelPlan, batch_settings, resolve_repository
from serve.kserve_http import error_response
from serve.model_deployment import ModelDeployment

__all__ = [
    "APP_NAME",
    "ROUTE_PREFIX",
    "InferenceIngress",
    "build_app",
    "build_model_app",
    "deploy",
]

log = logging.getLogger(__name__)

APP_NAME = "clara-inference"
ROUTE_PREFIX = "/v2"


# --------------------------------------------------------------------------- HTTP ingress


class _RootPath:
    """ASGI middleware: ``GET /v2`` (tritonclient's server metadata) reaches the ``/`` route.

    Under route prefix ``/v2`` Starlette sees that request as the empty path and
    would answer a 307 redirect, which tritonclient does not follow.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "") == scope.get("root_path", ""):
            scope = {**scope, "path": scope.get("path", "") + "/"}
        await self.app(scope, receive, send)


api = FastAPI(
    title="clara-ray inference (KServe v2)", docs_url=None, redoc_url=None, openapi_url=None
)


def _replica_token() -> SecretStr | None:
    """The token of the ingress replica serving the request."""
    ingress: InferenceIngress = serve.get_replica_context().servable_object  # type: ignore[assignment]
    return ingress.api_token


api.add_middleware(_RootPath)
api.add_middleware(BearerAuth, token=_replica_token, error_key="error")


@api.exception_handler(InferenceError)
async def _inference_error(_request: Request, exc: InferenceError) -> Response:
    return error_response(exc.status_code, str(exc))


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(exc.status_code, str(exc.detail))


def _version() -> str:
    try:
        return importlib.metadata.version("clara-ray")
    except importlib.metadata.PackageNotFoundError:
        return "0"


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class InferenceIngress:
    """The server's KServe v2 routes; each model's own application answers its routes."""

    def __init__(self, entries: dict[str, ModelEntry], api_token: SecretStr | None = None) -> None:
        keep_patient_data_out_of_logs()
        self.entries = entries
        self.api_token = api_token
        self.metrics = InferenceMetrics()
        self._handles: dict[str, Any] = {}

    def _handle(self, name: str) -> Any:
        if name not in self._handles:
            app = model_app_name(serve.get_replica_context().app_name, name)
            self._handles[name] = serve.get_deployment_handle(deployment_name(name), app_name=app)
        return self._handles[name]

    async def _model_ready(self, name: str) -> bool:
        try:
            return bool(await asyncio.wait_for(self._handle(name).ready.remote(None), 10.0))
        except (TimeoutError, RayTaskError, RayActorError, RayServeException, ValueError):
            return False  # an application that is not running, or cannot answer, is not ready

    @api.get("/")
    async def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "clara-ray",
            "version": _version(),
            "extensions": ["binary_tensor_data", "model_configuration", "model_repository"],
        }

    @api.get("/health/live")
    async def live(self) -> Response:
        return Response(status_code=200)

    @api.get("/health/ready")
    async def ready(self) -> Response:
        states = await asyncio.gather(*(self._model_ready(n) for n in self.entries))
        not_ready = [n for n, ok in zip(self.entries, states, strict=True) if not ok]
        if not_ready:
            return error_response(503, f"models not ready: {', '.join(not_ready)}")
        return Response(status_code=200)

    @api.post("/repository/index")
    async def repository_index(self) -> list[dict[str, Any]]:
        states = await asyncio.gather(*(self._model_ready(n) for n in sorted(self.entries)))
        return [
            {"name": name, "version": v, "state": "READY" if ok else "UNAVAILABLE"}
            for (name, entry), ok in zip(sorted(self.entries.items()), states, strict=True)
            for v in entry.versions
        ]

    @api.api_route("/models/{name}", methods=["GET", "POST"])
    async def model(self, name: str) -> Response:
        return self._not_running(name)

    @api.api_route("/models/{name}/{rest:path}", methods=["GET", "POST"])
    async def model_route(self, name: str, rest: str) -> Response:
        return self._not_running(name)

    def _not_running(self, name: str) -> Response:
        """A model route that reached the server: the model has no application running."""
        if name not in self.entries:
            self.metrics.request("", 404)  # unknown names would make unbounded label values
            raise UnknownModelError(
                f"unknown model {name!r}; models served: {', '.join(sorted(self.entries)) or 'none'}"
            )
        app = model_app_name(serve.get_replica_context().app_name, name)
        raise ModelNotReadyError(
            f"model {name!r} is not being served: its Serve application {app!r} is not running "
            "(see `serve status`)"
        )


# --------------------------------------------------------------------------- builders


def _api_token(args: InferenceAppArgs) -> SecretStr | None:
    if "api_token" in args.model_fields_set:
        return args.api_token
    return load_settings().serve.api_token


def _as_args(args: InferenceAppArgs | dict[str, Any]) -> InferenceAppArgs:
    return args if isinstance(args, InferenceAppArgs) else InferenceAppArgs.model_validate(args)


def _entries(args: InferenceAppArgs) -> dict[str, ModelEntry]:
    repository = ModelRepository(resolve_repository(args.model_repository))
    entries: dict[str, ModelEntry] = {}
    for name in args.models if args.models is not None else repository.names():
        try:
            entries[name] = repository.model(name)
        except (ModelRepositoryError, UnknownModelError) as exc:
            if args.skip_invalid_models and args.models is None:
                log.warning("not serving model %s: %s", name, exc)
                continue
            raise
    if not entries:
        raise ModelRepositoryError(
            f"model repository {str(repository.root)!r} has no model to serve"
        )
    return entries


def _cluster_has_gpu() -> bool | None:
    """True/False when connected to Ray, None when the builder runs outside a cluster."""
    if not ray.is_initialized():
        return None
    return ray.cluster_resources().get("GPU", 0) > 0


def build_app(args: InferenceAppArgs | dict[str, Any]) -> serve.Application:
    """The inference application: the server's routes over the models of the repository."""
    args = _as_args(args)
    entries = _entries(args)
    for entry in entries.values():
        batch_settings(entry, args)  # the model applications' arguments, checked up front
    log.info("inference app: models %s", ", ".join(entries))
    return InferenceIngress.options(max_ongoing_requests=args.ingress_max_ongoing_requests).bind(  # type: ignore[attr-defined]
        entries, _api_token(args)
    )


def build_model_app(args: InferenceAppArgs | dict[str, Any]) -> serve.Application:
    """The application of one model (``args.model``): its deployment is its HTTP ingress."""
    args = _as_args(args)
    if args.model is None:
        raise ModelRepositoryError(
            "a model application needs `model` in its args (the model it serves)"
        )
    entry = _entries(args.model_copy(update={"models": [args.model]}))[args.model]
    config = entry.config
    size, wait = batch_settings(entry, args)
    plan = ModelPlan(
        entry,
        size,
        wait,
        args.device,
        args.triton_url,
        args.triton_protocol,
        args.max_request_bytes,
        _api_token(args),
    )
    num_gpus = config.num_gpus
    if num_gpus > 0 and _cluster_has_gpu() is False:
        if not args.gpu_fallback:
            raise ModelRepositoryError(
                f"model {config.name!r} asks for {num_gpus} GPU per replica but the cluster has no GPU"
            )
        log.warning(
            "model %s asks for %s GPU per replica but the Ray cluster has no GPU: running it on CPU",
            config.name,
            num_gpus,
        )
        num_gpus = 0
    options: dict[str, Any] = {
        "name": deployment_name(config.name),
        "ray_actor_options": {
            "num_cpus": config.num_cpus if config.num_cpus is not None else args.num_cpus,
            "num_gpus": num_gpus,
        },
        "max_ongoing_requests": args.max_ongoing_requests or max(4 * size, 32),
    }
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = config.num_replicas
    return ModelDeployment.options(**options).bind(plan)  # type: ignore[attr-defined]


def deploy(
    args: InferenceAppArgs | dict[str, Any],
    name: str = APP_NAME,
    route_prefix: str = ROUTE_PREFIX,
    blocking: bool = False,
) -> list[str]:
    """Run the inference application and one application per model; returns the models.

    ``blocking=False`` returns once the applications are deployed; the model
    applications are started first, so the server's readiness sees them.
    """
    args = _as_args(args)
    if "api_token" not in args.model_fields_set:
        args = args.model_copy(update={"api_token": _api_token(args)})
    models = list(_entries(args))
    for model in models:
        serve.run(
            build_model_app(args.model_copy(update={"model": model, "models": None})),
            name=model_app_name(name, model),
            route_prefix=model_route_prefix(route_prefix, model),
            blocking=False,
        )
    serve.run(build_app(args), name=name, route_prefix=route_prefix, blocking=blocking)
    return models
