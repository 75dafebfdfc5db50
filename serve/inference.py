"""Model inference as a Ray Serve application speaking KServe v2 / Triton's HTTP protocol.

Deploy with ``serve run serve/inference.yaml``, ``serve deploy`` or a
RayService; the application is ``clara-inference`` on route prefix ``/v2``, so
``tritonclient.http.InferenceServerClient("host:8000")`` works unchanged.
Routes (relative to ``/v2``; KServe v2 plus Triton's config and repository index):

    GET  /v2                                       server metadata
    GET  /v2/health/live    GET /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]             model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready
    GET  /v2/models/{m}[/versions/{v}]/config      the model's config (Triton's JSON form)
    POST /v2/models/{m}[/versions/{v}]/infer       JSON tensors or the binary tensor extension
    POST /v2/repository/index

One deployment per model, ``model-<name>`` (:mod:`serve.model_deployment`, a thin
wrapper over a :mod:`clara_ray.inference.backends` class): replicas and
``num_gpus`` per replica from the model's ``config.pbtxt`` (fractional through
``parameters { key: "clara_gpu" ... }``), ``@serve.batch`` dynamic batching
counted in rows, autoscaling from the arguments, ``check_health``.  The FastAPI
ingress decodes and validates requests, then calls the model deployments
through DeploymentHandles; pipelines skip the ingress and call the same
deployments through :class:`clara_ray.inference.clients.ServeClient`.
The arguments are :class:`serve.inference_args.InferenceAppArgs`, plus the API token
(``api_token`` of :class:`~serve.inference_args.InferenceAppArgs`): with one, every route but ``/v2/health/live`` and
``/v2/health/ready`` needs ``Authorization: Bearer <token>`` (:mod:`serve.auth`).
"""

import asyncio
import importlib.metadata
import logging
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException

from clara_ray.config.settings import load_settings
from clara_ray.inference.clients import deployment_name
from clara_ray.inference.errors import (
    InferenceError,
    InvalidRequestError,
    ModelFailedError,
    ModelNotReadyError,
    ModelRepositoryError,
    UnknownModelError,
)
from clara_ray.inference.messages import (
    HEADER_LENGTH,
    InferResponse,
    binary_output_names,
    check_body_size,
    decode_request,
    decompress_body,
    encode_response,
)
from clara_ray.inference.metrics import InferenceMetrics
from clara_ray.inference.repository import ModelEntry, ModelRepository
from clara_ray.inference.tensors import Tensor
from clara_ray.inference.validate import validate_request
from clara_ray.phi import keep_patient_data_out_of_logs
from serve.auth import BearerAuth
from serve.inference_args import InferenceAppArgs, ModelPlan, batch_settings, resolve_repository
from serve.model_deployment import ModelDeployment

__all__ = ["APP_NAME", "ROUTE_PREFIX", "InferenceIngress", "build_app"]

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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@api.exception_handler(InferenceError)
async def _inference_error(_request: Request, exc: InferenceError) -> JSONResponse:
    return _error(exc.status_code, str(exc))


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


def _unwrap(exc: BaseException) -> BaseException:
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        check_body_size(int(declared), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        check_body_size(total, limit)
        chunks.append(chunk)
    return decompress_body(b"".join(chunks), request.headers.get("content-encoding"), limit)


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None


def _version() -> str:
    try:
        return importlib.metadata.version("clara-ray")
    except importlib.metadata.PackageNotFoundError:
        return "0"


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class InferenceIngress:
    """The KServe v2 HTTP routes over the model deployments."""

    def __init__(
        self,
        entries: dict[str, ModelEntry],
        handles: dict[str, Any],
        max_request_bytes: int,
        api_token: SecretStr | None = None,
    ) -> None:
        keep_patient_data_out_of_logs()
        self.entries = entries
        self.handles = handles
        self.max_request_bytes = max_request_bytes
        self.api_token = api_token
        self.metrics = InferenceMetrics()

    def _entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownModelError(
                f"unknown model {name!r}; models served: {', '.join(sorted(self.entries)) or 'none'}"
            )
        return entry

    async def _model_ready(self, name: str, version: str | None) -> bool:
        try:
            return bool(await asyncio.wait_for(self.handles[name].ready.remote(version), 10.0))
        except (TimeoutError, RayTaskError, RayActorError, RayServeException):
            return False  # a replica that cannot answer is not ready

    # -- server --------------------------------------------------------------

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
        states = await asyncio.gather(*(self._model_ready(n, None) for n in self.entries))
        not_ready = [n for n, ok in zip(self.entries, states, strict=True) if not ok]
        if not_ready:
            return _error(503, f"models not ready: {', '.join(not_ready)}")
        return Response(status_code=200)

    @api.post("/repository/index")
    async def repository_index(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "version": v, "state": "READY"}
            for name, entry in sorted(self.entries.items())
            for v in entry.versions
        ]

    # -- models --------------------------------------------------------------

    @api.get("/models/{name}")
    async def model_metadata(self, name: str) -> dict[str, Any]:
        return self._entry(name).metadata()

    @api.get("/models/{name}/versions/{version}")
    async def model_version_metadata(self, name: str, version: str) -> dict[str, Any]:
        entry = self._entry(name)
        entry.resolve_version(version)
        return entry.metadata()

    @api.get("/models/{name}/ready")
    async def model_ready(self, name: str) -> Response:
        return await self._ready_response(name, None)

    @api.get("/models/{name}/versions/{version}/ready")
    async def model_version_ready(self, name: str, version: str) -> Response:
        return await self._ready_response(name, version)

    async def _ready_response(self, name: str, version: str | None) -> Response:
        entry = self._entry(name)
        chosen = entry.resolve_version(version)
        if not await self._model_ready(name, chosen):
            raise ModelNotReadyError(f"model {name!r} version {chosen} is not ready")
        return Response(status_code=200)

    @api.get("/models/{name}/config")
    async def model_config(self, name: str) -> dict[str, Any]:
        return self._entry(name).config.to_json()

    @api.get("/models/{name}/versions/{version}/config")
    async def model_version_config(self, name: str, version: str) -> dict[str, Any]:
        entry = self._entry(name)
        entry.resolve_version(version)
        return entry.config.to_json()

    @api.post("/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> Response:
        return await self._infer(name, None, request)

    @api.post("/models/{name}/versions/{version}/infer")
    async def infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(name, version, request)

    async def _infer(self, name: str, version: str | None, request: Request) -> Response:
        if name not in self.entries:
            self.metrics.request("", 404)  # unknown names would make unbounded label values
            self._entry(name)
        entry = self.entries[name]
        try:
            chosen = entry.resolve_version(version)
            body = await _read_body(request, self.max_request_bytes)
            decoded = decode_request(body, _header_length(request))
            arrays = validate_request(decoded, entry.config)
        except InferenceError as exc:
            self.metrics.request(name, exc.status_code)  # the model deployment never sees it
            raise
        try:
            result = await self.handles[name].infer.remote(arrays, decoded.output_names(), chosen)
        except Exception as exc:
            cause = _unwrap(exc)
            if isinstance(cause, InferenceError):
                raise cause from None
            log.exception("inference on model %s failed", name)
            raise ModelFailedError(f"model {name!r} failed: {cause}") from None
        response = InferResponse(
            model_name=name,
            model_version=chosen,
            outputs=[Tensor.from_numpy(n, a) for n, a in result.items()],
            id=decoded.id,
        )
        body, header_length = encode_response(response, binary_output_names(decoded, result))
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )


# --------------------------------------------------------------------------- builder


def _api_token(args: InferenceAppArgs) -> SecretStr | None:
    if "api_token" in args.model_fields_set:
        return args.api_token
    return load_settings().serve.api_token


def _model_app(plan: ModelPlan, args: InferenceAppArgs, has_gpu: bool | None) -> Any:
    config = plan.entry.config
    num_gpus = config.num_gpus
    if num_gpus > 0 and has_gpu is False:
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
        "max_ongoing_requests": args.max_ongoing_requests or max(2 * plan.max_batch_size, 16),
    }
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = config.num_replicas
    return ModelDeployment.options(**options).bind(plan)  # type: ignore[attr-defined]


def _cluster_has_gpu() -> bool | None:
    """True/False when connected to Ray, None when the builder runs outside a cluster."""
    if not ray.is_initialized():
        return None
    return ray.cluster_resources().get("GPU", 0) > 0


def build_app(args: InferenceAppArgs | dict[str, Any]) -> serve.Application:
    """The inference application: one deployment per model plus the HTTP ingress."""
    if not isinstance(args, InferenceAppArgs):
        args = InferenceAppArgs.model_validate(args)
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
    has_gpu = _cluster_has_gpu()
    handles = {}
    for name, entry in entries.items():
        size, wait = batch_settings(entry, args)
        plan = ModelPlan(entry, size, wait, args.device, args.triton_url, args.triton_protocol)
        handles[name] = _model_app(plan, args, has_gpu)
    log.info("inference app: serving %s from %s", ", ".join(entries), repository.root)
    return InferenceIngress.options(max_ongoing_requests=args.ingress_max_ongoing_requests).bind(  # type: ignore[attr-defined]
        entries, handles, args.max_request_bytes, _api_token(args)
    )
