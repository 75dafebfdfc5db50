"""KServe v2 request and response bodies, as Triton and ``tritonclient.http`` exchange them.

Plain code, no HTTP framework: the Serve ingress, the clients and the tests
use it.  A body is JSON, or, with the binary tensor data extension that
``tritonclient.http`` uses by default, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors.
Outputs are returned in binary when the request says
``parameters.binary_data_output: true`` or an output asks for
``parameters.binary_data: true``.  Errors are ``{"error": "..."}`` with a
status code carried by the exception
(:attr:`~clara_ray.inference.errors.InferenceError.status_code`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clara_ray.inference.errors import InferenceError, InvalidRequestError, RequestTooLargeError
from clara_ray.inference.tensors import (
    UNSUPPORTED_PARAMETERS,
    Tensor,
    decode_tensors,
    parameters_of,
    to_binary,
    to_json,
)

__all__ = [
    "HEADER_LENGTH",
    "MAX_REQUEST_BYTES",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "binary_output_names",
    "check_body_size",
    "decode_request",
    "decode_response",
    "decompress_body",
    "encode_request",
    "encode_response",
    "error_body",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header giving the size of the JSON part of a binary-extension body."""

MAX_REQUEST_BYTES = 64 * 2**20
"""Default request body limit (Triton's ``--http-max-input-size`` default, 64 MiB)."""


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


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary data)."""
    header, rest = _split_body(body, header_length)
    if "inputs" not in header:
        raise InvalidRequestError("malformed request: no 'inputs'")
    inputs = decode_tensors(header["inputs"], rest, "inputs")
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
        params = parameters_of(item.get("parameters"), f"output {item['name']!r}")
        for key in UNSUPPORTED_PARAMETERS:
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
        parameters=parameters_of(header.get("parameters"), "request"),
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
            blob = to_binary(np.asarray(t.data))
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            item["data"] = to_json(np.asarray(t.data))
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
            blob = to_binary(t.data)
            item["parameters"] = {**t.parameters, "binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if t.parameters:
                item["parameters"] = t.parameters
            item["data"] = to_json(t.data)
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
    outputs = decode_tensors(header.get("outputs", []), rest, "outputs")
    version = header.get("model_version")
    return InferResponse(
        model_name=str(header.get("model_name", "")),
        model_version=None if version is None else str(version),
        outputs=outputs,
        id=header.get("id"),
        parameters=parameters_of(header.get("parameters"), "response"),
    )
