"""Inference backends: plain classes that run one model version on numpy inputs.

- :class:`TorchScriptBackend` runs a TorchScript file in-process (CUDA when
  the process sees a GPU, else CPU; eval mode, no autograd).
- :class:`TritonBackend` forwards to a model on an external Triton Inference
  Server through :class:`TritonConnection` (tritonclient, HTTP or gRPC).

Both share :meth:`Backend.infer_many`, the dynamic batcher's core: requests
with the same input signature are concatenated along the batch axis (at most
``max_batch_size`` rows), run once, and the outputs split back.  The Ray Serve
deployment in ``serve/model_deployment.py`` is a thin wrapper over these classes.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clara_ray.inference.config import ModelConfig
from clara_ray.inference.errors import (
    InferenceError,
    InferenceServiceError,
    InvalidRequestError,
    ModelRepositoryError,
    UnknownModelError,
)
from clara_ray.inference.tensors import datatype_of, numpy_dtype
from clara_ray.inference.torchscript_check import check_torchscript
from clara_ray.inference.validate import validate_outputs

__all__ = ["Backend", "TorchScriptBackend", "TritonBackend", "TritonConnection"]

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class Backend(ABC):
    """One version of one model; subclasses implement :meth:`_run` on a full batch."""

    def __init__(self, config: ModelConfig, version: str) -> None:
        self.config = config
        self.version = version

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Every output of the model for validated ``inputs``."""

    def check_health(self) -> None:
        """Raise when the backend cannot serve (the default: always healthy)."""
        return None

    def close(self) -> None:
        """Release what the backend holds."""
        return None

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> Arrays:
        """Run one request; returns the ``outputs`` asked for (default: all)."""
        wanted = validate_outputs(self.config, outputs)
        result = self._run(inputs)
        return {name: result[name] for name in wanted}

    def infer_many(
        self,
        requests: Sequence[Mapping[str, np.ndarray]],
        outputs: Sequence[Sequence[str] | None] | None = None,
    ) -> list[Arrays]:
        """Run several validated requests, batched where their inputs allow; one result each."""
        wanted = [
            validate_outputs(self.config, outputs[i] if outputs is not None else None)
            for i in range(len(requests))
        ]
        results: list[Arrays | None] = [None] * len(requests)
        for group in self._groups(requests):
            if len(group) == 1:
                merged = [self._run(requests[group[0]])]
            else:
                rows = [_rows(requests[i]) for i in group]
                stacked = {
                    name: np.concatenate([requests[i][name] for i in group], axis=0)
                    for name in requests[group[0]]
                }
                full = self._run(stacked)
                merged = _split(full, rows, self.config.name)
            for i, out in zip(group, merged, strict=True):
                results[i] = {name: out[name] for name in wanted[i]}
        return [r for r in results if r is not None]

    def _groups(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[list[int]]:
        """Indices of requests that run together: same signature, at most max_batch_size rows."""
        limit = self.config.max_batch_size
        if limit <= 0:
            return [[i] for i in range(len(requests))]
        groups: list[list[int]] = []
        keys: list[Any] = []
        sizes: list[int] = []
        for i, req in enumerate(requests):
            key = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in req.items()))
            rows = _rows(req)
            for g, (k, s) in enumerate(zip(keys, sizes, strict=True)):
                if k == key and s + rows <= limit:
                    groups[g].append(i)
                    sizes[g] += rows
                    break
            else:
                groups.append([i])
                keys.append(key)
                sizes.append(rows)
        return groups


def _rows(request: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(request.values())).shape[0]) if request else 0


def _split(outputs: Arrays, rows: list[int], model: str) -> list[Arrays]:
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceError(
                f"model {model!r}: output {name!r} has shape {list(array.shape)}, expected "
                f"the batch size {total} first; it cannot be split between batched requests"
            )
    bounds = np.cumsum([0, *rows])
    return [
        {name: array[bounds[k] : bounds[k + 1]] for name, array in outputs.items()}
        for k in range(len(rows))
    ]


# --------------------------------------------------------------------------- TorchScript


class TorchScriptBackend(Backend):
    """A TorchScript model file run in this process.

    ``device`` None or ``"auto"`` picks CUDA when this process sees a GPU
    (e.g. the one Ray assigned to the replica), else the CPU.  With ``warmup``
    and fully known input dims, a batch of zeros runs once at load, and
    outputs whose shape or datatype contradict the config are an error.
    """

    def __init__(
        self,
        config: ModelConfig,
        version: str,
        file: str | Path,
        device: str | None = None,
        warmup: bool = True,
    ) -> None:
        super().__init__(config, version)
        from clara_ray.inference.torchscript import TorchScriptModel

        for t in (*config.inputs, *config.outputs):
            if t.datatype == "BYTES":
                raise ModelRepositoryError(
                    f"model {config.name!r}: {t.name!r} has data_type TYPE_STRING, which a TorchScript model cannot take"
                )
        self.file = Path(file)
        self.model = TorchScriptModel.load(self.file, device)
        self.device = str(self.model.device)
        self.input_order, self.output_order = check_torchscript(
            config, self.model.module, self.file
        )
        if warmup:
            self._warmup()
        log.info(
            "model %s version %s loaded from %s on %s", config.name, version, self.file, self.device
        )

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        batch = _rows(inputs) if self.config.max_batch_size > 0 else None
        args = []
        for name in self.input_order:
            spec = self.config.input(name)
            array = inputs[name]
            if spec.reshape is not None:
                array = array.reshape(((batch,) if batch is not None else ()) + spec.reshape)
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, copy=True, order="C")
            args.append(array)
        produced = self.model.run(*args)
        if len(produced) != len(self.output_order):
            raise InferenceError(
                f"model {self.config.name!r} returned {len(produced)} outputs, "
                f"its config declares {len(self.output_order)}"
            )
        out: Arrays = {}
        specs = {t.name: t for t in self.config.outputs}
        for name, array in zip(self.output_order, produced, strict=True):
            spec = specs[name]
            if spec.reshape is not None:
                array = array.reshape(((batch,) if batch is not None else ()) + spec.dims)
            out[name] = array
        return out

    def _warmup(self) -> None:
        if any(-1 in t.dims for t in self.config.inputs):
            return
        lead = (1,) if self.config.max_batch_size > 0 else ()
        inputs = {
            t.name: np.zeros(lead + t.dims, dtype=numpy_dtype(t.datatype))
            for t in self.config.inputs
            if not t.optional
        }
        try:
            out = self._run(inputs)
        except (RuntimeError, InferenceError) as exc:
            raise ModelRepositoryError(
                f"model {self.config.name!r} version {self.version} ({self.file}) fails on a batch of "
                f"zeros shaped as its config.pbtxt declares: {exc}"
            ) from exc
        for spec in self.config.outputs:
            array = out[spec.name]
            got = datatype_of(array.dtype)
            if got != spec.datatype:
                raise ModelRepositoryError(
                    f"model {self.config.name!r} ({self.file}): output {spec.name!r} is {got}, "
                    f"config.pbtxt declares {spec.datatype}"
                )
            expected = (*lead, *spec.dims)
            if len(array.shape) != len(expected) or any(
                e != -1 and e != s for e, s in zip(expected, array.shape, strict=True)
            ):
                raise ModelRepositoryError(
                    f"model {self.config.name!r} ({self.file}): output {spec.name!r} has shape "
                    f"{list(array.shape)} for a batch of one, config.pbtxt declares {list(expected)}"
                )


# --------------------------------------------------------------------------- Triton


def _strip_scheme(url: str) -> str:
    for prefix in ("http://", "https://", "grpc://"):
        if url.startswith(prefix):
            return url[len(prefix) :].rstrip("/")
    return url.rstrip("/")


class TritonConnection:
    """tritonclient calls to one model on one Triton server, with errors that name them.

    One tritonclient client per thread (the HTTP client is bound to its gevent hub).
    """

    def __init__(
        self,
        url: str,
        model: str,
        version: str | None = None,
        protocol: Literal["http", "grpc"] = "http",
        timeout_s: float = 60.0,
        label: str | None = None,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f'Got "{protocol}" for protocol. Expected "http" or "grpc".')
        self.url = _strip_scheme(url)
        self.model = model
        self.version = version or ""
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.label = label or f"Triton {protocol} {self.url}"
        self._local = threading.local()
        self._metadata: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_local"] = None  # clients stay with the thread that made them
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def close(self) -> None:
        """Close this thread's client."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            client.close()

    def __repr__(self) -> str:
        return f"TritonConnection({self.url!r}, model={self.model!r}, protocol={self.protocol!r})"

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            module = self._module()
            if self.protocol == "grpc":
                client = module.InferenceServerClient(self.url)
            else:
                client = module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            self._local.client = client
        return client

    def _error(self, exc: BaseException, doing: str) -> InferenceError:
        what = f"{self.label}: model {self.model!r}" + (
            f" version {self.version}" if self.version else ""
        )
        status = str(exc.status() or "") if hasattr(exc, "status") else ""
        message = exc.message() if hasattr(exc, "message") else str(exc)
        if status in ("400", "StatusCode.INVALID_ARGUMENT"):
            return InvalidRequestError(f"{what}: {message}")
        if status in ("404", "StatusCode.NOT_FOUND") or "unknown model" in str(message).lower():
            return UnknownModelError(f"{what}: {message}")
        return InferenceServiceError(f"{what}: {doing} failed: {message or type(exc).__name__}")

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise self._error(exc, doing) from None
        except (OSError, TimeoutError) as exc:
            raise InferenceServiceError(
                f"{self.label}: model {self.model!r} is unreachable ({doing}): {exc}"
            ) from None

    def metadata(self) -> dict[str, Any]:
        """The model's KServe v2 metadata (cached)."""
        if self._metadata is None:
            client = self._client()
            kwargs = {"as_json": True} if self.protocol == "grpc" else {}
            meta = self._call(
                "metadata", client.get_model_metadata, self.model, self.version, **kwargs
            )
            for tensor in (*meta.get("inputs", []), *meta.get("outputs", [])):
                tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
            self._metadata = meta
        return self._metadata

    def ready(self) -> bool:
        return bool(
            self._call("readiness", self._client().is_model_ready, self.model, self.version)
        )

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> Arrays:
        module = self._module()
        infer_inputs = []
        for name, array in inputs.items():
            try:
                datatype = datatype_of(array.dtype)
            except TypeError as exc:
                raise InvalidRequestError(
                    f"input {name!r} of model {self.model!r}: {exc}"
                ) from None
            item = module.InferInput(name, list(array.shape), datatype)
            if self.protocol == "http":
                item.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
            else:
                item.set_data_from_numpy(np.ascontiguousarray(array))
            infer_inputs.append(item)
        names = (
            list(outputs)
            if outputs is not None
            else [o["name"] for o in self.metadata()["outputs"]]
        )
        if self.protocol == "http":
            requested = [module.InferRequestedOutput(n, binary_data=True) for n in names]
        else:
            requested = [module.InferRequestedOutput(n) for n in names]
        client = self._client()
        result = self._call(
            "inference",
            client.infer,
            self.model,
            infer_inputs,
            model_version=self.version,
            outputs=requested,
        )
        return {n: result.as_numpy(n) for n in names}


class TritonBackend(Backend):
    """Forwards a model version to an external Triton server (the model has the same name there)."""

    def __init__(
        self,
        config: ModelConfig,
        version: str,
        url: str,
        protocol: Literal["http", "grpc"] = "http",
        timeout_s: float = 60.0,
    ) -> None:
        super().__init__(config, version)
        self.connection = TritonConnection(url, config.name, version, protocol, timeout_s)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return self.connection.infer(inputs, [t.name for t in self.config.outputs])

    def close(self) -> None:
        self.connection.close()

    def check_health(self) -> None:
        if not self.connection.ready():
            raise InferenceServiceError(
                f"{self.connection.label}: model {self.config.name!r} version {self.version} is not ready"
            )
