"""HTTP pieces the inference applications share: reading a request body within its limit,
the binary-extension header, and the protocol's answers (``{"error": ...}`` on failure)."""

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clara_ray.inference.errors import InvalidRequestError
from clara_ray.inference.messages import (
    HEADER_LENGTH,
    InferRequest,
    InferResponse,
    binary_output_names,
    check_body_size,
    decompress_body,
    encode_response,
)
from clara_ray.inference.tensors import Tensor

__all__ = ["error_response", "header_length", "infer_response", "read_body"]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, decompressed; a body over ``limit`` bytes is refused unread."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        check_body_size(int(declared), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        check_body_size(total, limit)
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return decompress_body(body, request.headers.get("content-encoding"), limit)


def header_length(request: Request) -> int | None:
    """The ``Inference-Header-Content-Length`` of a binary-extension request, if any."""
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None


def infer_response(
    model: str, version: str, request: InferRequest, result: dict[str, Any]
) -> Response:
    """The answer to ``request``: JSON, or JSON header + binary outputs where it asked for them."""
    response = InferResponse(
        model_name=model,
        model_version=version,
        outputs=[Tensor.from_numpy(n, a) for n, a in result.items()],
        id=request.id,
    )
    body, length = encode_response(response, binary_output_names(request, result))
    if length is None:
        return Response(body, media_type="application/json")
    return Response(
        body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(length)}
    )
