"""KServe v2 wire format: JSON and binary round trips, tritonclient compatibility, every validation error."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as triton_http

from clara_ray.inference.config import ModelConfig
from clara_ray.inference.errors import (
    InferenceError,
    InferenceServiceError,
    InvalidRequestError,
    ModelNotReadyError,
    RequestTooLargeError,
    UnknownModelError,
)
from clara_ray.inference.messages import (
    HEADER_LENGTH,
    InferRequest,
    InferResponse,
    RequestedOutput,
    binary_output_names,
    check_body_size,
    decode_request,
    decode_response,
    decompress_body,
    encode_request,
    encode_response,
    error_body,
)
from clara_ray.inference.tensors import Tensor, datatype_of, numpy_dtype
from clara_ray.inference.validate import validate_inputs, validate_outputs, validate_request

CONFIG = ModelConfig.parse(
    """
    name: "seg"
    platform: "pytorch_libtorch"
    max_batch_size: 4
    input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, -1, 8 ] },
            { name: "MASK" data_type: TYPE_UINT8 dims: [ 2 ] optional: true } ]
    output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, -1, 8 ] } ]
    """,
    "seg/config.pbtxt",
)
FLAT = ModelConfig.parse(
    """
    name: "flat"
    input { name: "X" data_type: TYPE_INT64 dims: [ 3 ] }
    output { name: "Y" data_type: TYPE_INT64 dims: [ 3 ] }
    """
)


def _all_types() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "b": np.array([[True, False, True]]),
        "u8": rng.integers(0, 255, (2, 3), dtype=np.uint8),
        "u16": rng.integers(0, 60000, (2, 3), dtype=np.uint16),
        "u32": rng.integers(0, 2**32 - 1, (2,), dtype=np.uint32),
        "u64": np.array([2**64 - 1, 0], dtype=np.uint64),
        "i8": rng.integers(-128, 127, (4,), dtype=np.int8),
        "i16": rng.integers(-1000, 1000, (2, 2), dtype=np.int16),
        "i32": rng.integers(-(2**31), 2**31 - 1, (3,), dtype=np.int32),
        "i64": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
        "f16": rng.normal(size=(2, 2)).astype(np.float16),
        "f32": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
        "f64": rng.normal(size=(5,)),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    strings = np.empty((2, 2), dtype=np.object_)
    strings[:] = [[b"a", b""], ["\u00e9t\u00e9".encode(), b"xyz"]]
    arrays["bytes"] = strings
    return arrays


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_request_round_trip_every_datatype(binary: bool) -> None:
    arrays = _all_types()
    body, header_length = encode_request(arrays, ["out"], binary=binary, request_id="r1")
    assert (header_length is not None) == binary
    request = decode_request(body, header_length)
    assert request.id == "r1"
    assert request.output_names() == ["out"]
    assert {t.name: t.datatype for t in request.inputs}["bytes"] == "BYTES"
    _assert_same(request.arrays(), arrays)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_response_round_trip_every_datatype(binary: bool) -> None:
    arrays = _all_types()
    response = InferResponse("m", "3", [Tensor.from_numpy(k, v) for k, v in arrays.items()], id="x")
    body, header_length = encode_response(response, set(arrays) if binary else set())
    decoded = decode_response(body, header_length)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "3", "x")
    _assert_same(decoded.arrays(), arrays)


def test_mixed_binary_and_json_outputs() -> None:
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int32)}
    response = InferResponse("m", "1", [Tensor.from_numpy(k, v) for k, v in arrays.items()])
    body, header_length = encode_response(response, {"b"})
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["data"] == [0, 1, 2, 3, 4, 5]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 12}
    _assert_same(decode_response(body, header_length).arrays(), arrays)


def test_json_data_may_be_nested() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
    ).encode()
    np.testing.assert_array_equal(decode_request(body).arrays()["x"], [[1, 2], [3, 4]])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_request_is_understood(binary: bool) -> None:
    x = np.random.default_rng(1).normal(size=(2, 1, 5, 8)).astype(np.float32)
    words = np.array([b"one", b"two"], dtype=np.object_)
    inputs = [
        triton_http.InferInput("INPUT__0", list(x.shape), "FP32").set_data_from_numpy(x, binary),
        triton_http.InferInput("W", [2], "BYTES").set_data_from_numpy(words, binary),
    ]
    outputs = [triton_http.InferRequestedOutput("OUTPUT__0", binary_data=binary)]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id="7"
    )
    request = decode_request(body, header_length)
    _assert_same(request.arrays(), {"INPUT__0": x, "W": words})
    assert request.id == "7"
    assert binary_output_names(request, ["OUTPUT__0"]) == ({"OUTPUT__0"} if binary else set())


def test_tritonclient_default_asks_binary_outputs() -> None:
    x = np.ones((1, 3), np.float32)
    inputs = [triton_http.InferInput("X", [1, 3], "FP32").set_data_from_numpy(x)]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(inputs)
    request = decode_request(body, header_length)
    assert request.parameters == {"binary_data_output": True}
    assert binary_output_names(request, ["Y", "Z"]) == {"Y", "Z"}


@pytest.mark.parametrize("binary", [set(), {"OUTPUT__0", "S"}], ids=["json", "binary"])
def test_response_is_understood_by_tritonclient(binary: set[str]) -> None:
    y = np.random.default_rng(2).normal(size=(3, 1, 4, 8)).astype(np.float32)
    s = np.array([b"ab", b"c"], dtype=np.object_)
    response = InferResponse(
        "seg", "1", [Tensor.from_numpy("OUTPUT__0", y), Tensor.from_numpy("S", s)]
    )
    body, header_length = encode_response(response, binary)
    result = triton_http.InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), y)
    words = result.as_numpy("S")
    if not binary:  # tritonclient keeps JSON strings as str
        words = np.array([w.encode() for w in words], dtype=np.object_)
    np.testing.assert_array_equal(words, s)
    assert result.get_response()["model_version"] == "1"


def test_binary_output_names_per_output_overrides_request() -> None:
    request = InferRequest(
        inputs=[],
        outputs=[RequestedOutput("a", False), RequestedOutput("b", True), RequestedOutput("c")],
        parameters={"binary_data_output": True},
    )
    assert binary_output_names(request, ["a", "b", "c"]) == {"b", "c"}
    request.parameters = {}
    assert binary_output_names(request, ["a", "b", "c"]) == {"b"}


def test_error_body_and_decode_response_error() -> None:
    assert json.loads(error_body("boom")) == {"error": "boom"}
    with pytest.raises(InferenceError, match=r"^boom$"):
        decode_response(error_body("boom"))


def test_status_codes() -> None:
    assert InvalidRequestError("x").status_code == 400
    assert RequestTooLargeError("x").status_code == 400
    assert UnknownModelError("no model 'a'").status_code == 404
    assert str(UnknownModelError("no model 'a'")) == "no model 'a'"
    assert ModelNotReadyError("x").status_code == 503
    assert InferenceServiceError("x").status_code == 503


def test_datatype_names() -> None:
    assert numpy_dtype("FP16") == np.float16
    assert datatype_of(np.dtype(np.float32)) == "FP32"
    assert datatype_of(np.dtype("S3")) == "BYTES"
    with pytest.raises(
        InvalidRequestError, match="input 'x': unknown datatype 'BF16'; expected one of BOOL"
    ):
        numpy_dtype("BF16", "input 'x'")
    with pytest.raises(TypeError, match="numpy dtype complex64 has no KServe datatype"):
        datatype_of(np.dtype(np.complex64))


# --------------------------------------------------------------------------- body


def test_body_size_limit() -> None:
    check_body_size(10, 10)
    with pytest.raises(
        RequestTooLargeError, match="request body of 11 bytes exceeds the limit of 10 bytes"
    ):
        check_body_size(11, 10)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(encoding: str) -> None:
    raw = b'{"inputs": []}' * 10
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    assert decompress_body(packed, encoding, 1000) == raw
    with pytest.raises(RequestTooLargeError, match="exceeds the limit of 50 bytes"):
        decompress_body(packed, encoding, 50)
    with pytest.raises(InvalidRequestError, match=f"request body is not valid {encoding} data"):
        decompress_body(b"not compressed", encoding, 1000)


def test_unknown_content_encoding() -> None:
    assert decompress_body(b"x", None, 1) == b"x"
    with pytest.raises(
        InvalidRequestError,
        match="unsupported Content-Encoding 'br'; expected gzip, deflate or none",
    ):
        decompress_body(b"x", "br", 10)


# --------------------------------------------------------------------------- decode errors


def _json(inputs: object, **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


X = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{nope", None, "malformed request: the JSON header is not valid JSON"),
        (b"\xff\xfe", None, "malformed request: the JSON header is not valid JSON"),
        (b"[1, 2]", None, "malformed request: the JSON header must be an object, got list"),
        (b"{}", 5, f"{HEADER_LENGTH} is 5 but the body has 2 bytes"),
        (b"{}", None, "malformed request: no 'inputs'"),
        (_json({"x": 1}), None, "malformed request: 'inputs' must be a list"),
        (_json([7]), None, r"malformed request: inputs\[0\] must be an object"),
        (_json([{"datatype": "FP32"}]), None, r"malformed request: inputs\[0\] has no 'name'"),
        (_json([{**X, "datatype": "FLOAT"}]), None, "input 'x': unknown datatype 'FLOAT'"),
        (_json([{**X, "datatype": None}]), None, "input 'x': unknown datatype None"),
        (
            _json([{**X, "shape": [2, -1]}]),
            None,
            r"input 'x': 'shape' must be a list of non-negative integers, got \[2, -1\]",
        ),
        (
            _json([{**X, "shape": "2"}]),
            None,
            "input 'x': 'shape' must be a list of non-negative integers, got '2'",
        ),
        (
            _json([{**X, "shape": [3]}]),
            None,
            r"input 'x': shape \[3\] needs 3 elements, got 2 in 'data'",
        ),
        (_json([{**X, "data": 5}]), None, "input 'x': 'data' must be a list, got int"),
        (
            _json([{**X, "data": ["a", "b"]}]),
            None,
            r"input 'x': 'data' holds values that are not FP32 \(expected numbers\)",
        ),
        (
            _json([{**X, "datatype": "BOOL", "data": [1, 0]}]),
            None,
            r"not BOOL \(expected true/false\)",
        ),
        (
            _json([{**X, "datatype": "INT32", "data": [1.5, 2]}]),
            None,
            "'data' holds values that are not INT32",
        ),
        (
            _json([{**X, "datatype": "UINT8", "data": [1, 300]}]),
            None,
            "input 'x': 'data' does not fit UINT8",
        ),
        (
            _json([{**X, "datatype": "BYTES", "data": [1, 2]}]),
            None,
            "input 'x': BYTES 'data' must hold strings",
        ),
        (
            _json([{k: v for k, v in X.items() if k != "data"}]),
            None,
            "input 'x': has neither 'data' nor parameters.binary_data_size",
        ),
        (_json([X, X]), None, "malformed request: input 'x' is given twice"),
        (
            _json([{**X, "parameters": []}]),
            None,
            r"input 'x': 'parameters' must be an object, got \[\]",
        ),
        (
            _json([{**X, "parameters": {"shared_memory_region": "r"}}]),
            None,
            "input 'x': parameter 'shared_memory_region' is not supported here",
        ),
        (_json([X], outputs={"y": 1}), None, "malformed request: 'outputs' must be a list"),
        (
            _json([X], outputs=[{"nom": "y"}]),
            None,
            r"malformed request: outputs\[0\] must be an object with a 'name'",
        ),
        (
            _json([X], outputs=[{"name": "y", "parameters": {"classification": 2}}]),
            None,
            "output 'y': parameter 'classification' is not supported here",
        ),
    ],
)
def test_decode_errors(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        decode_request(body, header_length)


def _binary(
    size: object, blob: bytes, *, data: bool = False, datatype: str = "FP32", shape: object = (2,)
) -> tuple[bytes, int]:
    item: dict[str, object] = {
        "name": "x",
        "datatype": datatype,
        "shape": list(shape),
        "parameters": {"binary_data_size": size},
    }  # type: ignore[call-overload]
    if data:
        item["data"] = [1.0, 2.0]
    head = json.dumps({"inputs": [item]}).encode()
    return head + blob, len(head)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (8, b"\0" * 8),
            {"data": True},
            "input 'x': has both 'data' and parameters.binary_data_size",
        ),
        (
            (-1, b""),
            {},
            "input 'x': parameters.binary_data_size must be a non-negative integer, got -1",
        ),
        (
            ("8", b"\0" * 8),
            {},
            "parameters.binary_data_size must be a non-negative integer, got '8'",
        ),
        (
            (12, b"\0" * 8),
            {},
            r"input 'x': parameters.binary_data_size 12 runs past the end of the binary data \(8 bytes",
        ),
        (
            (4, b"\0" * 4),
            {},
            r"input 'x': shape \[2\] of FP32 needs 8 bytes, got binary_data_size 4",
        ),
        (
            (8, b"\0" * 12),
            {},
            "malformed request: 12 bytes of binary data follow the JSON header, but the inputs declare 8",
        ),
        (
            (6, b"\x02\0\0\0ab"),
            {"datatype": "BYTES"},
            "input 'x': BYTES data ends inside element 1 of 2",
        ),
        (
            (6, b"\x09\0\0\0ab"),
            {"datatype": "BYTES", "shape": (1,)},
            "input 'x': BYTES element 0 claims 9 bytes past the end",
        ),
        (
            (7, b"\x01\0\0\0abc"),
            {"datatype": "BYTES", "shape": (1,)},
            "input 'x': BYTES data has 2 bytes left over after 1 elements",
        ),
    ],
)
def test_binary_decode_errors(
    args: tuple[object, bytes], kwargs: dict[str, object], message: str
) -> None:
    body, header_length = _binary(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match=message):
        decode_request(body, header_length)


# --------------------------------------------------------------------------- validation


def _request(**arrays: np.ndarray) -> InferRequest:
    return InferRequest(inputs=[Tensor.from_numpy(k, v) for k, v in arrays.items()])


def test_valid_requests_pass() -> None:
    x = np.zeros((3, 1, 17, 8), np.float32)  # -1 takes any size, batch 3 <= 4
    assert set(validate_request(_request(INPUT__0=x), CONFIG)) == {"INPUT__0"}
    validate_inputs(CONFIG, {"INPUT__0": x, "MASK": np.zeros((3, 2), np.uint8)})
    validate_inputs(FLAT, {"X": np.zeros(3, np.int64)})
    assert validate_outputs(CONFIG, None) == ["OUTPUT__0"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"INPUT__1": np.zeros((1, 1, 2, 8), np.float32)},
            "model 'seg' has no input 'INPUT__1'; expected inputs: INPUT__0, MASK",
        ),
        (
            {"MASK": np.zeros((1, 2), np.uint8)},
            "input 'INPUT__0' of model 'seg' is missing from the request",
        ),
        (
            {"INPUT__0": np.zeros((1, 1, 2, 8), np.float64)},
            "input 'INPUT__0' of model 'seg': datatype FP64 does not match the model's FP32",
        ),
        (
            {"INPUT__0": np.zeros((1, 2, 2, 8), np.float32)},
            r"input 'INPUT__0' of model 'seg': shape \[1, 2, 2, 8\] does not match the model's \[-1, 1, -1, 8\]",
        ),
        (
            {"INPUT__0": np.zeros((1, 2, 8), np.float32)},
            r"shape \[1, 2, 8\] does not match the model's \[-1, 1, -1, 8\] \(batch dimension first, then \[1, -1, 8\]\)",
        ),
        (
            {"INPUT__0": np.zeros((5, 1, 2, 8), np.float32)},
            r"input 'INPUT__0' of model 'seg': batch size 5 is outside 1..4 \(max_batch_size of model 'seg'\)",
        ),
        ({"INPUT__0": np.zeros((0, 1, 2, 8), np.float32)}, "batch size 0 is outside 1..4"),
        (
            {"INPUT__0": np.zeros((2, 1, 2, 8), np.float32), "MASK": np.zeros((1, 2), np.uint8)},
            "input 'MASK' of model 'seg': batch size 1 differs from the other inputs' 2",
        ),
        ({"INPUT__0": [1.0]}, "input 'INPUT__0' of model 'seg': expected a numpy array, got list"),
        (
            {"INPUT__0": np.zeros((1, 1, 2, 8), np.complex64)},
            "input 'INPUT__0' of model 'seg': numpy dtype complex64 has no KServe datatype",
        ),
    ],
)
def test_validation_errors(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        validate_inputs(CONFIG, arrays)


def test_validation_without_batching() -> None:
    with pytest.raises(
        InvalidRequestError,
        match=r"input 'X' of model 'flat': shape \[1, 3\] does not match the model's \[3\]",
    ):
        validate_inputs(FLAT, {"X": np.zeros((1, 3), np.int64)})


def test_declared_datatype_must_match_the_model() -> None:
    request = _request(INPUT__0=np.zeros((1, 1, 2, 8), np.float32))
    request.inputs[0].datatype = "FP64"  # declared differently from what the data decoded to
    with pytest.raises(
        InvalidRequestError,
        match="input 'INPUT__0' of model 'seg': datatype FP64 does not match the model's FP32",
    ):
        validate_request(request, CONFIG)


def test_unknown_output() -> None:
    request = _request(INPUT__0=np.zeros((1, 1, 2, 8), np.float32))
    request.outputs = [RequestedOutput("PROBS")]
    with pytest.raises(
        InvalidRequestError, match="model 'seg' has no output 'PROBS'; expected outputs: OUTPUT__0"
    ):
        validate_request(request, CONFIG)


def test_model_routes_below_the_models_route_prefix() -> None:
    from clara_ray.inference.errors import MethodNotAllowedError, RouteNotFoundError
    from clara_ray.inference.routes import ModelRoute, model_route, relative_path

    prefix = "/v2/models/liver-seg"
    assert relative_path(prefix, prefix) == ""
    assert relative_path(prefix + "/versions/2/infer", prefix) == "versions/2/infer"
    assert relative_path("/infer", prefix) == "infer"  # a scope whose path is relative already
    assert model_route("GET", "", "liver-seg") == ModelRoute("metadata")
    assert model_route("HEAD", "ready", "liver-seg") == ModelRoute("ready")
    assert model_route("GET", "config", "liver-seg") == ModelRoute("config")
    assert model_route("POST", "infer", "liver-seg") == ModelRoute("infer")
    assert model_route("POST", "versions/2/infer", "liver-seg") == ModelRoute("infer", "2")
    assert model_route("GET", "versions/2", "liver-seg") == ModelRoute("metadata", "2")
    with pytest.raises(RouteNotFoundError, match=r"no route /v2/models/liver-seg/predict"):
        model_route("POST", "predict", "liver-seg")
    with pytest.raises(RouteNotFoundError):
        model_route("GET", "versions", "liver-seg")
    with pytest.raises(MethodNotAllowedError, match="GET is not allowed on the infer route"):
        model_route("GET", "infer", "liver-seg")
    with pytest.raises(MethodNotAllowedError, match="use GET"):
        model_route("POST", "config", "liver-seg")
