"""The Ray Serve deployment of one model, ``model-<name>``: the ingress of the model's application.

A thin wrapper over a :mod:`clara_ray.inference.backends` class: replicas and
``num_gpus`` per replica come from the model's ``config.pbtxt``, concurrent
requests are batched counted in rows (:class:`~clara_ray.inference.batching.DynamicBatcher`:
a batch is formed when the model is free, from every request queued by then), and
``check_health`` reports a broken backend.  It answers the model's KServe v2 routes itself
(:mod:`clara_ray.inference.routes`, on route prefix ``/v2/models/<name>``), so
an HTTP request crosses no deployment but this one; the body's binary tensors
are decoded in place (``np.frombuffer``).
:class:`clara_ray.inference.clients.ServeClient` calls :meth:`ModelDeployment.infer`
through a DeploymentHandle.
"""

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from clara_ray.inference.backends import Backend, TorchScriptBackend, TritonBackend
from clara_ray.inference.batching import DynamicBatcher
from clara_ray.inference.errors import InferenceError, ModelFailedError, ModelNotReadyError
from clara_ray.inference.messages import decode_request
from clara_ray.inference.metrics import InferenceMetrics
from clara_ray.inference.routes import model_route, relative_path
from clara_ray.inference.validate import validate_inputs, validate_outputs, validate_request
from clara_ray.phi import keep_patient_data_out_of_logs
from serve.auth import UNAUTHORIZED, scope_allowed
from serve.inference_args import ModelPlan
from serve.kserve_http import error_response, header_length, infer_response, read_body

__all__ = ["ModelDeployment"]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    version: str
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    rows: int


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=10)
class ModelDeployment:
    """Every served version of one model; requests are batched by :meth:`_run_batch`."""

    def __init__(self, plan: ModelPlan) -> None:
        keep_patient_data_out_of_logs()
        self.plan = plan
        self.entry = plan.entry
        self.name = plan.entry.name
        self.backends: dict[str, Backend] = {}
        for version in self.entry.versions:
            if plan.triton_url:
                self.backends[version] = TritonBackend(
                    self.entry.config, version, plan.triton_url, plan.triton_protocol
                )
            else:
                self.backends[version] = TorchScriptBackend(
                    self.entry.config, version, self.entry.model_file(version), plan.device
                )
        self.metrics = InferenceMetrics()
        self.batches: collections.deque[tuple[int, int]] = collections.deque(maxlen=1000)
        self.batcher: DynamicBatcher[_Item, dict[str, np.ndarray]] = DynamicBatcher(
            self._run_batch,
            plan.max_batch_size,
            plan.batch_wait_timeout_s,
            rows=lambda item: item.rows,
        )

    async def __call__(self, request: Request) -> Response:
        """The model's HTTP routes (below its application's route prefix)."""
        try:
            if not scope_allowed(request.scope, self.plan.api_token):
                return error_response(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
            path = relative_path(request.scope.get("path", ""), request.scope.get("root_path", ""))
            route = model_route(request.method, path, self.name)
            if route.action == "infer":
                return await self._http_infer(route.version, request)
            chosen = self.entry.resolve_version(route.version)
            if route.action == "metadata":
                return JSONResponse(self.entry.metadata())
            if route.action == "config":
                return JSONResponse(self.entry.config.to_json())
            if not self.ready(chosen):
                raise ModelNotReadyError(f"model {self.name!r} version {chosen} is not ready")
            return Response(status_code=200)
        except InferenceError as exc:
            return error_response(exc.status_code, str(exc))
        except ClientDisconnect:
            raise  # nobody is left to answer
        except Exception as exc:
            log.exception("model %s: %s %s failed", self.name, request.method, request.url.path)
            return error_response(
                500,
                f"model {self.name!r} could not answer {request.method} {request.url.path}: "
                f"internal error ({type(exc).__name__}); the server log has the details",
            )

    async def _http_infer(self, version: str | None, request: Request) -> Response:
        start = time.perf_counter()
        try:
            chosen = self.entry.resolve_version(version)
            body = await read_body(request, self.plan.max_request_bytes)
            decoded = decode_request(body, header_length(request))
            arrays = validate_request(decoded, self.entry.config)
            names = validate_outputs(self.entry.config, decoded.output_names())
        except InferenceError as exc:
            self.metrics.request(self.name, exc.status_code)
            raise
        result = await self._infer_valid(chosen, arrays, names, start)
        return infer_response(self.name, chosen, decoded, result)

    async def infer(
        self,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate and run one request (batched with concurrent ones)."""
        start = time.perf_counter()
        try:
            chosen = self.entry.resolve_version(version)
            validate_inputs(self.entry.config, inputs)
            names = validate_outputs(self.entry.config, outputs)
        except InferenceError as exc:
            self.metrics.request(self.name, exc.status_code)
            raise
        return await self._infer_valid(chosen, inputs, names, start)

    async def _infer_valid(
        self, version: str, inputs: dict[str, np.ndarray], names: list[str], start: float
    ) -> dict[str, np.ndarray]:
        try:
            rows = (
                int(next(iter(inputs.values())).shape[0])
                if self.entry.config.max_batch_size > 0 and inputs
                else 1
            )
            if rows > self.plan.max_batch_size:  # larger requests run alone, unsplit
                result = await asyncio.to_thread(self._run_alone, version, inputs, names)
            else:
                result = await self.batcher.submit(_Item(version, inputs, names, rows))
        except InferenceError as exc:
            self.metrics.request(self.name, exc.status_code)
            raise
        except Exception as exc:
            self.metrics.request(self.name, 500)
            log.exception("model %s failed", self.name)
            raise ModelFailedError(f"model {self.name!r} failed: {exc}") from None
        self.metrics.request(self.name, 200)
        self.metrics.latency(self.name, time.perf_counter() - start)
        return result

    def _run_alone(
        self, version: str, inputs: dict[str, np.ndarray], names: list[str]
    ) -> dict[str, np.ndarray]:
        self.batches.append((1, int(next(iter(inputs.values())).shape[0])))
        self.metrics.batch(self.name, self.batches[-1][1])
        return self.backends[version].infer(inputs, names)

    async def _run_batch(self, items: list[_Item]) -> list[dict[str, np.ndarray]]:
        rows = sum(item.rows for item in items)
        self.batches.append((len(items), rows))
        self.metrics.batch(self.name, rows)
        return await asyncio.to_thread(self._compute, items)

    def _compute(self, items: list[_Item]) -> list[dict[str, np.ndarray]]:
        results: list[dict[str, np.ndarray]] = [{} for _ in items]
        by_version: dict[str, list[int]] = collections.defaultdict(list)
        for i, item in enumerate(items):
            by_version[item.version].append(i)
        for version, indices in by_version.items():
            outs = self.backends[version].infer_many(
                [items[i].inputs for i in indices], [items[i].outputs for i in indices]
            )
            for i, out in zip(indices, outs, strict=True):
                results[i] = out
        return results

    def metadata(self, version: str | None = None) -> dict[str, Any]:
        self.entry.resolve_version(version)
        return self.entry.metadata()

    def ready(self, version: str | None = None) -> bool:
        backend = self.backends[self.entry.resolve_version(version)]
        try:
            backend.check_health()
        except InferenceError:
            return False
        return True

    def check_health(self) -> None:
        for backend in self.backends.values():
            backend.check_health()

    def stats(self) -> dict[str, Any]:
        """Recent batches (requests, rows), this replica's id and GPU ids, for tests and operators."""
        context = serve.get_replica_context()
        backend = next(iter(self.backends.values()))
        return {
            "model": self.name,
            "replica": context.replica_id.unique_id,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "device": getattr(backend, "device", "triton"),
            "torch_threads": _torch_threads(),
            "max_batch_size": self.plan.max_batch_size,
            "batch_wait_timeout_s": self.plan.batch_wait_timeout_s,
            "batches": list(self.batches),
        }

    def __del__(self) -> None:
        for backend in getattr(self, "backends", {}).values():
            backend.close()


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())
