"""Inference clients for operators: ``make_client(ServiceSpec)`` gives the same API over Serve or Triton.

- :class:`ServeClient` (``kind: serve``) calls the model's Ray Serve deployment
  (in the model's own application, ``<app>-<model>``) through a DeploymentHandle:
  no HTTP hop, and it works from inside Ray tasks.
- :class:`TritonClient` (``kind: triton``) calls a Triton Inference Server at
  ``url`` with ``tritonclient.http`` or ``tritonclient.grpc``.

Both raise the inference errors of :mod:`clara_ray.inference.errors` with the
service and model named: :class:`~clara_ray.inference.errors.InvalidRequestError`
for a request the model rejects, :class:`~clara_ray.inference.errors.UnknownModelError`
for a missing model or version, and
:class:`~clara_ray.inference.errors.InferenceServiceError` when the service
cannot be reached.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clara_ray.inference.backends import TritonConnection
from clara_ray.inference.errors import InferenceError, InferenceServiceError, InvalidRequestError
from clara_ray.inference.tensors import DATATYPES
from clara_ray.pipeline.spec import ServiceSpec

__all__ = [
    "DEPLOYMENT_PREFIX",
    "InferenceClient",
    "ServeClient",
    "TritonClient",
    "deployment_name",
    "make_client",
    "model_app_name",
    "model_route_prefix",
]

log = logging.getLogger(__name__)

DEPLOYMENT_PREFIX = "model-"
"""Serve deployments of models are named ``model-<model name>`` in the inference application."""


def deployment_name(model: str) -> str:
    """The Serve deployment that serves ``model`` (the ingress of its application)."""
    return f"{DEPLOYMENT_PREFIX}{model}"


def model_app_name(app: str, model: str) -> str:
    """The Serve application of ``model`` beside the inference application ``app``."""
    return f"{app}-{model}"


def model_route_prefix(route_prefix: str, model: str) -> str:
    """The route prefix of ``model``'s application under the inference app's ``route_prefix``."""
    return f"{route_prefix.rstrip('/')}/models/{model}"


class InferenceClient(ABC):
    """Calls one model of one inference service."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec

    @property
    def label(self) -> str:
        return f"inference service {self.spec.name!r} (kind {self.spec.kind}, model {self.spec.model!r})"

    @abstractmethod
    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model on named inputs; returns the named ``outputs`` (default: all)."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The model's KServe v2 metadata: name, versions, platform, inputs, outputs."""

    def close(self) -> None:
        """Release connections (a no-op by default)."""
        return None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """A single-input, single-output model on ``batch``, cast to the input's datatype."""
        meta = self.metadata()
        inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidRequestError(
                f"{self.label}: predict() needs a model with one input and one output, this one has "
                f"{len(inputs)} input(s) and {len(outputs)} output(s); call infer() instead"
            )
        dtype = DATATYPES.get(inputs[0]["datatype"])
        array = np.asarray(batch)
        if dtype is not None and dtype.kind != "O" and array.dtype != dtype:
            array = array.astype(dtype)
        name = outputs[0]["name"]
        return self.infer({inputs[0]["name"]: array}, [name])[name]

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServeClient(InferenceClient):
    """The model's deployment in its Serve application, through a DeploymentHandle."""

    def __init__(self, spec: ServiceSpec, timeout_s: float = 300.0) -> None:
        super().__init__(spec)
        self.deployment = deployment_name(spec.model)
        self.app = model_app_name(spec.app, spec.model)
        self.timeout_s = timeout_s
        self._handle: Any = None

    def _get_handle(self) -> Any:
        if self._handle is None:
            import ray
            from ray import serve

            if not ray.is_initialized():
                raise InferenceServiceError(
                    f"{self.label}: not connected to a Ray cluster; the Serve application "
                    f"{self.app!r} is reached from Ray tasks or after ray.init()"
                )
            try:
                self._handle = serve.get_deployment_handle(self.deployment, app_name=self.app)
            except Exception as exc:  # Serve raises several types here; all mean "not there"
                raise InferenceServiceError(
                    f"{self.label}: deployment {self.deployment!r} of Serve application "
                    f"{self.app!r} is not reachable (is the inference application running and "
                    f"serving model {self.spec.model!r}?): {exc}"
                ) from None
        return self._handle

    def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import RayServeException

        handle = self._get_handle()
        try:
            return getattr(handle, method).remote(*args).result(timeout_s=self.timeout_s)
        except RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, InferenceError):
                raise type(cause)(f"{self.label}: {cause}") from None
            raise InferenceServiceError(f"{self.label}: {method} failed: {cause}") from None
        except InferenceError as exc:
            raise type(exc)(f"{self.label}: {exc}") from None
        except TimeoutError:
            raise InferenceServiceError(
                f"{self.label}: no answer from deployment {self.deployment!r} within {self.timeout_s} s"
            ) from None
        except (
            RayServeException,
            RayActorError,
        ) as exc:  # deployment gone, back-pressure, cancelled
            raise InferenceServiceError(f"{self.label}: {method} failed: {exc}") from None

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = self._call(
            "infer", dict(inputs), None if outputs is None else list(outputs), self.spec.version
        )
        return result

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self._call("metadata", self.spec.version)
        return meta


class TritonClient(InferenceClient):
    """A model on a Triton Inference Server, through tritonclient (HTTP or gRPC per the spec)."""

    def __init__(self, spec: ServiceSpec, timeout_s: float = 300.0) -> None:
        super().__init__(spec)
        if not spec.url:
            raise ValueError(f"{self.label}: kind triton needs a url (host:port)")
        self.connection = TritonConnection(
            spec.url,
            spec.model,
            spec.version,
            spec.protocol,
            timeout_s,
            label=f"inference service {spec.name!r} (Triton {spec.protocol} {spec.url})",
        )

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        return self.connection.infer(inputs, outputs)

    def metadata(self) -> dict[str, Any]:
        return self.connection.metadata()

    def close(self) -> None:
        self.connection.close()


def make_client(spec: ServiceSpec, timeout_s: float = 300.0) -> InferenceClient:
    """The client for a pipeline's ``services`` entry."""
    if spec.kind == "serve":
        return ServeClient(spec, timeout_s)
    if spec.kind == "triton":
        return TritonClient(spec, timeout_s)
    raise ValueError(
        f'Got "{spec.kind}" for kind of service {spec.name!r}. Expected "serve" or "triton".'
    )
