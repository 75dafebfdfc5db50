"""The KServe v2 inference protocol as Triton implements it: tensors, requests, responses, errors.

Plain code, no HTTP framework: the Serve ingress, the clients and the tests
use it.  It covers

- JSON tensors (``{"name", "datatype", "shape", "data"}`` with ``data`` in
  row-major order, flat or nested),
- the binary tensor data extension that ``tritonclient.http`` uses by
  default: the body is a JSON header of ``Inference-Header-Content-Length``
  bytes followed by the raw tensors, each input announcing its size in
  ``parameters.binary_data_size``; outputs are returned in binary when the
  request says ``parameters.binary_data_output: true`` or an output asks for
  ``parameters.binary_data: true``,
- errors as ``{"error": "..."}`` with a status code carried by the exception
  (:attr:`InferenceError.status_code`), and
- validation of a request against a model's configuration (names, datatypes,
  shapes with ``-1`` wildcards and the batch dimension).

Binary data is little-endian; BYTES elements are a 4-byte little-endian
length followed by the bytes, as Triton serialises them.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clara_ray.errors import ClaraError

if TYPE_CHECKING:
    from clara_ray.inference.repository import ModelConfig, TensorConfig

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "MAX_REQUEST_BYTES",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InferenceServiceError",
    "InvalidRequestError",
    "ModelNotReadyError",
    "RequestTooLargeError",
    "RequestedOutput",
    "Tensor",
    "UnknownModelError",
    "binary_output_names",
    "check_body_size",
    "datatype_of",
    "decode_request",
    "decode_response",
    "decompress_body",
    "encode_request",
    "encode_response",
    "error_body",
    "numpy_dtype",
    "validate_inputs",
    "validate_outputs",
    "validate_request",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header giving the size of the JSON part of a binary-extension body."""

MAX_REQUEST_BYTES = 64 * 2**20
"""Default request body limit (Triton's ``--http-max-input-size`` default, 64 MiB)."""

DATATYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""KServe v2 datatype names and the numpy dtype of each (BF16 is not supported)."""

_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "classification")


# --------------------------------------------------------------------------- errors


class InferenceError(ClaraError):
    """Base of the inference errors; :attr:`status_code` is the HTTP status an edge answers."""

    status_code = 400


class InvalidRequestError(InferenceError, ValueError):
    """A request is malformed or does not fit the model (HTTP 400); the message names the tensor."""


class RequestTooLargeError(InvalidRequestError):
    """The request body exceeds the configured limit (HTTP 400, as Triton answers)."""


class UnknownModelError(InferenceError, LookupError):
    """No such model, or no such version of it (HTTP 404)."""

    status_code = 404

    def __str__(self) -> str:  # LookupError would quote a KeyError-style argument
        return str(self.args[0]) if self.args else ""


class ModelNotReadyError(InferenceError):
    """The model exists but cannot serve now (HTTP 503)."""

    status_code = 503


class InferenceServiceError(InferenceError):
    """An inference service (Serve deployment, Triton server) cannot be reached (HTTP 503)."""

    status_code = 503


# --------------------------------------------------------------------------- datatypes


def numpy_dtype(datatype: Any, what: str = "tensor") -> np.dtype[Any]:
    """The numpy dtype of a KServe datatype name; unknown names raise :class:`InvalidRequestError`."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidRequestError(
            f"{what}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The KServe datatype name of a numpy dtype (bytes and str arrays are BYTES)."""
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate == dt:
            return name
    raise TypeError(
        f"numpy dtype {dt} has no KServe datatype; expected one of {', '.join(DATATYPES)}"
    )


# --------------------------------------------------------------------------- data classes


@dataclass
class Tensor:
    """A named tensor of a request or a response; ``data`` has ``shape`` and the datatype's dtype."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray) -> Tensor:
        return cls(name, datatype_of(array.dtype), tuple(array.shape), array)


@dataclass
class RequestedOutput:
    """An output a request asks for; ``binary_data`` None leaves it to ``binary_data_output``."""

    name: str
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """A decoded inference request."""

    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {t.name: t.data for t in self.inputs}

    def output_names(self) -> list[str] | None:
        """The requested output names, or None for "all outputs"."""
        return [o.name for o in self.outputs] or None


@dataclass
class InferResponse:
    """An inference response: the outputs of one request."""

    model_name: str
    model_version: str | None
    outputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {t.name: t.data for t in self.outputs}


# --------------------------------------------------------------------------- body helpers


def check_body_size(length: int, limit: int) -> None:
    """Raise :class:`RequestTooLargeError` when a body of ``length`` bytes exceeds ``limit``."""
    if length > limit:
        raise RequestTooLargeError(
            f"request body of {length} bytes exceeds the limit of {limit} bytes"
        )


def decompress_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), within ``limit``."""
    if not encoding or encoding.lower() == "identity":
        return body
    kinds = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    wbits = kinds.get(encoding.lower())
    if wbits is None:
        raise InvalidRequestError(
            f"unsupported Content-Encoding {encoding!r}; expected gzip, deflate or none"
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequestError(f"request body is not valid {encoding} data: {exc}") from None
    check_body_size(len(out), limit)
    return out


def error_body(message: str) -> bytes:
    """The protocol's error JSON."""
    return json.dumps({"error": message}).encode()


def _split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        header_bytes, rest = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidRequestError(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes"
            )
        header_bytes, rest = body[:header_length], body[header_length:]
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError(
            f"malformed request: the JSON header is not valid JSON: {exc}"
        ) from None
    if not isinstance(header, dict):
        raise InvalidRequestError(
            f"malformed request: the JSON header must be an object, got {type(header).__name__}"
        )
    return header, memoryview(rest)


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidRequestError(
            f"{what}: 'shape' must be a list of non-negative integers, got {value!r}"
        )
    return tuple(value)


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what}: 'parameters' must be an object, got {value!r}")
    return value


def _deserialize_bytes(buf: memoryview, count: int, what: str) -> np.ndarray:
    out = np.empty(count, dtype=np.object_)
    pos = 0
    for i in range(count):
        if pos + 4 > len(buf):
            raise InvalidRequestError(f"{what}: BYTES data ends inside element {i} of {count}")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise InvalidRequestError(
                f"{what}: BYTES element {i} claims {n} bytes past the end of its data"
            )
        out[i] = bytes(buf[pos : pos + n])
        pos += n
    if pos != len(buf):
        raise InvalidRequestError(
            f"{what}: BYTES data has {len(buf) - pos} bytes left over after {count} elements"
        )
    return out


def _serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _from_binary(buf: memoryview, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _deserialize_bytes(buf, count, what).reshape(shape)
    dtype = DATATYPES[datatype]
    need = count * dtype.itemsize
    if len(buf) != need:
        raise InvalidRequestError(
            f"{what}: shape {list(shape)} of {datatype} needs {need} bytes, "
            f"got binary_data_size {len(buf)}"
        )
    return (
        np.frombuffer(buf, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    )


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = list(_flatten(data, what))
        if not all(isinstance(x, str) for x in flat):
            raise InvalidRequestError(f"{what}: BYTES 'data' must hold strings")
        values = np.empty(len(flat), dtype=np.object_)
        values[:] = [x.encode() for x in flat]
    else:
        dtype = DATATYPES[datatype]
        flat = list(_flatten(data, what))
        if datatype == "BOOL":
            ok = all(isinstance(x, bool) for x in flat)
        elif dtype.kind in "iu":
            ok = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
        else:
            ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat)
        if not ok:
            raise InvalidRequestError(
                f"{what}: 'data' holds values that are not {datatype} "
                f"(expected {'true/false' if datatype == 'BOOL' else 'numbers'})"
            )
        try:
            values = np.array(flat, dtype=dtype)
        except (OverflowError, ValueError) as exc:
            raise InvalidRequestError(f"{what}: 'data' does not fit {datatype}: {exc}") from None
    if values.size != count:
        raise InvalidRequestError(
            f"{what}: shape {list(shape)} needs {count} elements, got {values.size} in 'data'"
        )
    return values.reshape(shape)


def _flatten(data: Any, what: str) -> Iterable[Any]:
    if not isinstance(data, list):
        raise InvalidRequestError(f"{what}: 'data' must be a list, got {type(data).__name__}")
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item, what)
        else:
            yield item


def _to_json(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in ("O", "S"):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    values: list[Any] = array.reshape(-1).tolist()
    return values


def _to_binary(array: np.ndarray) -> bytes:
    if array.dtype.kind in ("O", "S", "U"):
        return _serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _decode_tensors(
    items: Any, rest: memoryview, what: str, *, binary_param: str = "binary_data_size"
) -> list[Tensor]:
    if not isinstance(items, list):
        raise InvalidRequestError(f"malformed request: '{what}' must be a list, got {items!r}")
    tensors: list[Tensor] = []
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"malformed request: {what}[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"malformed request: {what}[{i}] has no 'name'")
        label = f"{what[:-1]} {name!r}"
        raw_datatype = item.get("datatype")
        numpy_dtype(raw_datatype, label)
        datatype = str(raw_datatype)
        shape = _shape(item.get("shape"), label)
        params = _parameters(item.get("parameters"), label)
        for key in _UNSUPPORTED_PARAMETERS:
            if key in params:
                raise InvalidRequestError(f"{label}: parameter {key!r} is not supported here")
        size = params.get(binary_param)
        if size is not None:
            if "data" in item:
                raise InvalidRequestError(f"{label}: has both 'data' and parameters.{binary_param}")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidRequestError(
                    f"{label}: parameters.{binary_param} must be a non-negative integer, got {size!r}"
                )
            if offset + size > len(rest):
                raise InvalidRequestError(
                    f"{label}: parameters.{binary_param} {size} runs past the end of the binary "
                    f"data ({len(rest)} bytes after the JSON header, {offset} used before it)"
                )
            data = _from_binary(rest[offset : offset + size], datatype, shape, label)
            offset += size
        elif "data" in item:
            data = _from_json(item["data"], datatype, shape, label)
        else:
            raise InvalidRequestError(f"{label}: has neither 'data' nor parameters.{binary_param}")
        tensors.append(Tensor(name, datatype, shape, data, params))
    if offset != len(rest):
        raise InvalidRequestError(
            f"malformed request: {len(rest)} bytes of binary data follow the JSON header, "
            f"but the {what} declare {offset}"
        )
    return tensors


# --------------------------------------------------------------------------- requests


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary data)."""
    header, rest = _split_body(body, header_length)
    if "inputs" not in header:
        raise InvalidRequestError("malformed request: no 'inputs'")
    inputs = _decode_tensors(header["inputs"], rest, "inputs")
    names = [t.name for t in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequestError(f"malformed request: input {duplicates[0]!r} is given twice")
    outputs: list[RequestedOutput] = []
    raw_outputs = header.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidRequestError(
            f"malformed request: 'outputs' must be a list, got {raw_outputs!r}"
        )
    for i, item in enumerate(raw_outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequestError(
                f"malformed request: outputs[{i}] must be an object with a 'name'"
            )
        params = _parameters(item.get("parameters"), f"output {item['name']!r}")
        for key in _UNSUPPORTED_PARAMETERS:
            if key in params:
                raise InvalidRequestError(
                    f"output {item['name']!r}: parameter {key!r} is not supported here"
                )
        binary = params.get("binary_data")
        outputs.append(
            RequestedOutput(item["name"], None if binary is None else bool(binary), params)
        )
    request_id = header.get("id")
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=None if request_id is None else str(request_id),
        parameters=_parameters(header.get("parameters"), "request"),
    )


def encode_request(
    inputs: Mapping[str, np.ndarray] | Sequence[Tensor],
    outputs: Sequence[str | RequestedOutput] | None = None,
    *,
    binary: bool = True,
    binary_output: bool | None = None,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """Encode a request as tritonclient.http does: ``(body, header length or None)``.

    ``binary`` sends the inputs in the binary extension; ``binary_output`` sets
    the request's ``binary_data_output`` parameter (default: same as ``binary``
    when no outputs are named).
    """
    tensors = (
        [Tensor.from_numpy(k, v) for k, v in inputs.items()]
        if isinstance(inputs, Mapping)
        else list(inputs)
    )
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    items, blobs = [], []
    for t in tensors:
        item: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "datatype": t.datatype}
        params = dict(t.parameters)
        if binary:
            blob = _to_binary(np.asarray(t.data))
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            item["data"] = _to_json(np.asarray(t.data))
        if params:
            item["parameters"] = params
        items.append(item)
    header["inputs"] = items
    if outputs:
        reqs = [
            o if isinstance(o, RequestedOutput) else RequestedOutput(o, binary_output)
            for o in outputs
        ]
        header["outputs"] = [
            {
                "name": o.name,
                **(
                    {"parameters": {**o.parameters, "binary_data": o.binary_data}}
                    if o.binary_data is not None
                    else {}
                ),
            }
            for o in reqs
        ]
    elif binary_output if binary_output is not None else binary:
        header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


# --------------------------------------------------------------------------- responses


def binary_output_names(request: InferRequest, names: Iterable[str]) -> set[str]:
    """Which of ``names`` go back in binary: per-output ``binary_data``, else ``binary_data_output``."""
    default = bool(request.parameters.get("binary_data_output", False))
    asked = {o.name: o.binary_data for o in request.outputs}
    return {n for n in names if (asked.get(n) if asked.get(n) is not None else default)}


def encode_response(
    response: InferResponse, binary: Collection[str] = ()
) -> tuple[bytes, int | None]:
    """Encode a response: ``(body, header length or None)``; outputs named in ``binary`` go binary."""
    header: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        header["model_version"] = response.model_version
    if response.id is not None:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    items, blobs = [], []
    for t in response.outputs:
        item: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if t.name in binary:
            blob = _to_binary(t.data)
            item["parameters"] = {**t.parameters, "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if t.parameters:
                item["parameters"] = t.parameters
            item["data"] = _to_json(t.data)
        items.append(item)
    header["outputs"] = items
    head = json.dumps(header).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def decode_response(body: bytes, header_length: int | None = None) -> InferResponse:
    """Decode a response body (the inverse of :func:`encode_response`); error JSON raises."""
    header, rest = _split_body(body, header_length)
    if "error" in header:
        raise InferenceError(str(header["error"]))
    outputs = _decode_tensors(header.get("outputs", []), rest, "outputs")
    version = header.get("model_version")
    return InferResponse(
        model_name=str(header.get("model_name", "")),
        model_version=None if version is None else str(version),
        outputs=outputs,
        id=header.get("id"),
        parameters=_parameters(header.get("parameters"), "response"),
    )


# --------------------------------------------------------------------------- validation


def _check_shape(
    spec: TensorConfig, shape: tuple[int, ...], config: ModelConfig, what: str
) -> None:
    dims = spec.dims
    if config.max_batch_size > 0:
        expected = [-1, *dims]
        if len(shape) != len(dims) + 1:
            raise InvalidRequestError(
                f"{what}: shape {list(shape)} does not match the model's {expected} "
                f"(batch dimension first, then {list(dims)})"
            )
        if not 1 <= shape[0] <= config.max_batch_size:
            raise InvalidRequestError(
                f"{what}: batch size {shape[0]} is outside 1..{config.max_batch_size} "
                f"(max_batch_size of model {config.name!r})"
            )
        rest = shape[1:]
    else:
        expected = list(dims)
        rest = shape
    if len(rest) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, rest, strict=True)):
        raise InvalidRequestError(
            f"{what}: shape {list(shape)} does not match the model's {expected}"
        )


def validate_inputs(config: ModelConfig, arrays: Mapping[str, np.ndarray]) -> None:
    """Check numpy inputs against ``config``: names, dtypes, shapes and the batch dimension.

    With batching, every input must have the same batch size.
    """
    model = f"model {config.name!r}"
    known = {t.name: t for t in config.inputs}
    for name in arrays:
        if name not in known:
            raise InvalidRequestError(
                f"{model} has no input {name!r}; expected inputs: {', '.join(known)}"
            )
    batch: int | None = None
    for spec in config.inputs:
        what = f"input {spec.name!r} of {model}"
        if spec.name not in arrays:
            if spec.optional:
                continue
            raise InvalidRequestError(f"{what} is missing from the request")
        array = arrays[spec.name]
        if not isinstance(array, np.ndarray):
            raise InvalidRequestError(f"{what}: expected a numpy array, got {type(array).__name__}")
        try:
            got = datatype_of(array.dtype)
        except TypeError as exc:
            raise InvalidRequestError(f"{what}: {exc}") from None
        if got != spec.datatype:
            raise InvalidRequestError(
                f"{what}: datatype {got} does not match the model's {spec.datatype}"
            )
        _check_shape(spec, tuple(array.shape), config, what)
        if config.max_batch_size > 0:
            if batch is not None and array.shape[0] != batch:
                raise InvalidRequestError(
                    f"{what}: batch size {array.shape[0]} differs from the other inputs' {batch}"
                )
            batch = array.shape[0]


def validate_outputs(config: ModelConfig, names: Iterable[str] | None) -> list[str]:
    """The output names to return (all when ``names`` is None); unknown names raise."""
    known = [t.name for t in config.outputs]
    if names is None:
        return known
    chosen = list(names)
    for name in chosen:
        if name not in known:
            raise InvalidRequestError(
                f"model {config.name!r} has no output {name!r}; expected outputs: {', '.join(known)}"
            )
    return chosen


def validate_request(request: InferRequest, config: ModelConfig) -> dict[str, np.ndarray]:
    """Check a decoded request against ``config``; its declared datatypes too. Returns the arrays."""
    known = {t.name: t for t in config.inputs}
    for tensor in request.inputs:
        spec = known.get(tensor.name)
        if spec is not None and tensor.datatype != spec.datatype:
            raise InvalidRequestError(
                f"input {tensor.name!r} of model {config.name!r}: datatype {tensor.datatype} "
                f"does not match the model's {spec.datatype}"
            )
    arrays = request.arrays()
    validate_inputs(config, arrays)
    validate_outputs(config, request.output_names())
    return arrays
