"""KServe v2 tensors: datatypes, and each tensor's JSON and binary encoding.

JSON tensors are ``{"name", "datatype", "shape", "data"}`` with ``data`` in
row-major order, flat or nested.  In the binary tensor data extension a
tensor announces its size in ``parameters.binary_data_size`` and its raw
bytes follow the JSON header; they are little-endian, and BYTES elements are
a 4-byte little-endian length followed by the bytes, as Triton serialises
them (:func:`tritonclient.utils.serialize_byte_tensor`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from clara_ray.inference.errors import InvalidRequestError

__all__ = [
    "DATATYPES",
    "UNSUPPORTED_PARAMETERS",
    "Tensor",
    "datatype_of",
    "decode_tensors",
    "numpy_dtype",
    "parameters_of",
    "to_binary",
    "to_json",
]

DATATYPES: Mapping[str, np.dtype[Any]] = {
    name: np.dtype(triton_to_np_dtype(name))
    for name in (
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    )
}
"""KServe v2 datatype names and the numpy dtype of each (BF16 is not supported)."""

UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "classification")
"""Tensor parameters of extensions this server does not implement; a request using one is rejected."""


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


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidRequestError(
            f"{what}: 'shape' must be a list of non-negative integers, got {value!r}"
        )
    return tuple(value)


def parameters_of(value: Any, what: str) -> dict[str, Any]:
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
    if array.size == 0:
        return b""
    if array.dtype.kind == "U":
        array = array.astype(np.object_)
    serialized: bytes = serialize_byte_tensor(array).item()
    return serialized


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


def to_json(array: np.ndarray) -> list[Any]:
    if array.dtype.kind in ("O", "S"):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    values: list[Any] = array.reshape(-1).tolist()
    return values


def to_binary(array: np.ndarray) -> bytes:
    if array.dtype.kind in ("O", "S", "U"):
        return _serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def decode_tensors(
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
        params = parameters_of(item.get("parameters"), label)
        for key in UNSUPPORTED_PARAMETERS:
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
