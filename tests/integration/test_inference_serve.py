"""The Serve inference application over real HTTP: tritonclient, a plain HTTP client and
DeploymentHandles get what the TorchScript model gives directly; health, metadata, every
error case, dynamic batching, fractional GPUs and metrics."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from clara_ray.inference.backends import TritonBackend
from clara_ray.inference.clients import (
    ServeClient,
    TritonClient,
    deployment_name,
    make_client,
    model_app_name,
)
from clara_ray.inference.errors import InferenceServiceError, InvalidRequestError, UnknownModelError
from clara_ray.inference.messages import HEADER_LENGTH, decode_response, encode_request
from clara_ray.inference.repository import ModelRepository
from clara_ray.inference.torchscript import TorchScriptModel
from clara_ray.pipeline.spec import ServiceSpec
from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "clara-inference"
LIVER = ROOT / "models" / "liver-seg"
LIMIT = 1 << 20  # max_request_bytes of the app under test

HALF = """
name: "liver-half"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] } ]
instance_group [ { count: 2 kind: KIND_GPU } ]
dynamic_batching { max_queue_delay_microseconds: 100000 }
version_policy { all { } }
parameters { key: "clara_gpu" value { string_value: "0.5" } }
"""

LIVER_CONFIG = """
name: "liver-seg"
platform: "pytorch_libtorch"
max_batch_size: 32
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] } ]
instance_group [ { count: 1 kind: KIND_GPU } ]
"""


class StandIn(torch.nn.Module):
    """Same contract as the liver model (HU in, probability out), used only when it is not trained."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x / 1000.0))


def make_repository(root: Path) -> Path:
    """liver-seg as shipped (or a stand-in), and liver-half: the same file at 0.5 GPU, 2 replicas, 2 versions."""
    root.mkdir(parents=True)
    if (LIVER / "1" / "model.pt").is_file():
        shutil.copytree(LIVER, root / "liver-seg")
    else:
        (root / "liver-seg" / "1").mkdir(parents=True)
        (root / "liver-seg" / "config.pbtxt").write_text(LIVER_CONFIG)
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(StandIn()), str(root / "liver-seg" / "1" / "model.pt"))
    for version in ("1", "2"):
        (root / "liver-half" / version).mkdir(parents=True)
        shutil.copy(
            root / "liver-seg" / "1" / "model.pt", root / "liver-half" / version / "model.pt"
        )
    (root / "liver-half" / "config.pbtxt").write_text(HALF)
    return root


@dataclass
class Endpoint:
    host: str
    repository: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def direct(self, x: np.ndarray, model: str = "liver-seg") -> np.ndarray:
        entry = ModelRepository(self.repository).model(model)
        return TorchScriptModel.load(entry.model_file(), "cpu")(x)


@pytest.fixture(scope="module")
def endpoint(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    from ray import serve

    from serve.inference import deploy
    from serve.inference_args import InferenceAppArgs

    repository = make_repository(tmp_path_factory.mktemp("inference") / "models")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = InferenceAppArgs(
            model_repository=str(repository), num_cpus=0, max_request_bytes=LIMIT
        )
        deploy(args, name=APP, route_prefix="/v2")
        yield Endpoint(f"127.0.0.1:{port}", repository)
    finally:
        serve.shutdown()


def slices(n: int, seed: int = 0) -> np.ndarray:
    """CT-like slices in HU: a body ellipse with a brighter blob, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    body = ((yy - 64) / 50) ** 2 + ((xx - 64) / 60) ** 2 < 1
    organ = ((yy - 60) / 20) ** 2 + ((xx - 45) / 25) ** 2 < 1
    base = np.where(body, 40.0, -1000.0) + np.where(organ, 60.0, 0.0)
    return (base + rng.normal(0, 10, (n, 1, 128, 128))).astype(np.float32)


def post(
    ep: Endpoint, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST with urllib; the response headers come back with lower-case names."""
    request = urllib.request.Request(
        f"{ep.url}{path}", data=body, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def get(ep: Endpoint, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{ep.url}{path}", timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def assert_error(status: int, body: bytes, expected_status: int, message: str) -> None:
    assert status == expected_status, body
    error = json.loads(body)["error"]
    assert message in error, error


# --------------------------------------------------------------------------- same output as the model


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_the_models_output(endpoint: Endpoint, binary: bool) -> None:
    x = slices(3)
    client = triton_http.InferenceServerClient(endpoint.host)
    try:
        inp = triton_http.InferInput("INPUT__0", list(x.shape), "FP32").set_data_from_numpy(
            x, binary_data=binary
        )
        out = triton_http.InferRequestedOutput("OUTPUT__0", binary_data=binary)
        result = client.infer("liver-seg", [inp], outputs=[out], request_id="abc")
        assert result.get_response()["id"] == "abc"
        assert result.get_response()["model_version"] == "1"
        np.testing.assert_allclose(
            result.as_numpy("OUTPUT__0"), endpoint.direct(x), rtol=0, atol=1e-5
        )
        default = client.infer("liver-seg", [inp])  # no outputs named: all, in binary
        np.testing.assert_array_equal(default.as_numpy("OUTPUT__0"), result.as_numpy("OUTPUT__0"))
    finally:
        client.close()


def test_plain_http_json(endpoint: Endpoint) -> None:
    x = slices(1, seed=1)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT__0",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ]
        }
    ).encode()
    response = httpx.post(
        f"{endpoint.url}/v2/models/liver-seg/versions/1/infer", content=body, timeout=60
    )
    assert response.status_code == 200, response.text
    assert HEADER_LENGTH.lower() not in {k.lower() for k in response.headers}
    output = response.json()["outputs"][0]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "OUTPUT__0",
        "FP32",
        [1, 1, 128, 128],
    )
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, endpoint.direct(x), rtol=0, atol=1e-5)


def test_plain_http_binary(endpoint: Endpoint) -> None:
    x = slices(2, seed=2)
    body, header_length = encode_request({"INPUT__0": x})
    status, headers, raw = post(
        endpoint, "/v2/models/liver-seg/infer", body, {HEADER_LENGTH: str(header_length)}
    )
    assert status == 200, raw
    result = decode_response(raw, int(headers[HEADER_LENGTH.lower()]))
    np.testing.assert_allclose(result.arrays()["OUTPUT__0"], endpoint.direct(x), rtol=0, atol=1e-5)


def test_serve_client_through_a_handle(endpoint: Endpoint) -> None:
    x = slices(2, seed=3)
    client = make_client(ServiceSpec(name="liver", kind="serve", model="liver-seg"))
    assert isinstance(client, ServeClient)
    np.testing.assert_allclose(
        client.predict(x.astype(np.float64)), endpoint.direct(x), rtol=0, atol=1e-5
    )
    assert client.metadata()["inputs"][0]["shape"] == [-1, 1, 128, 128]
    with pytest.raises(
        InvalidRequestError,
        match=r"inference service 'liver' \(kind serve, model 'liver-seg'\): input 'INPUT__0' of model 'liver-seg': shape \[2, 128, 128\]",
    ):
        client.infer({"INPUT__0": x[:, 0]})
    versioned = make_client(ServiceSpec(name="half", kind="serve", model="liver-half", version="9"))
    with pytest.raises(
        UnknownModelError,
        match=r"inference service 'half' .*model 'liver-half' has no version '9'; versions served: 1, 2",
    ):
        versioned.predict(x)
    missing = make_client(ServiceSpec(name="lung", kind="serve", model="lung-seg"))
    with pytest.raises(
        InferenceServiceError,
        match=r"inference service 'lung' .*deployment 'model-lung-seg' of Serve application 'clara-inference-lung-seg' is not reachable",
    ):
        missing.predict(x)


def _predict_in_a_task(spec: ServiceSpec, x: np.ndarray) -> np.ndarray:
    return make_client(spec).predict(x)


def test_serve_client_inside_a_ray_task(endpoint: Endpoint) -> None:
    import ray

    x = slices(2, seed=6)
    task = ray.remote(num_cpus=0)(_predict_in_a_task)
    got = ray.get(
        task.remote(ServiceSpec(name="liver", kind="serve", model="liver-seg"), x), timeout=120
    )
    np.testing.assert_allclose(got, endpoint.direct(x), rtol=0, atol=1e-5)


def test_triton_client_and_backend_speak_to_serve(endpoint: Endpoint) -> None:
    x = slices(2, seed=4)
    client = make_client(
        ServiceSpec(name="liver", kind="triton", model="liver-seg", url=f"http://{endpoint.host}")
    )
    assert isinstance(client, TritonClient)
    with client:
        np.testing.assert_allclose(client.predict(x), endpoint.direct(x), rtol=0, atol=1e-5)
        with pytest.raises(
            InvalidRequestError,
            match="input 'INPUT__0' of model 'liver-seg': datatype INT32 does not match the model's FP32",
        ):
            client.infer({"INPUT__0": x.astype(np.int32)})
    entry = ModelRepository(endpoint.repository).model("liver-seg")
    backend = TritonBackend(entry.config, "1", endpoint.host)
    backend.check_health()
    outs = backend.infer_many([{"INPUT__0": x[:1]}, {"INPUT__0": x[1:]}])
    np.testing.assert_allclose(
        np.concatenate([o["OUTPUT__0"] for o in outs]), endpoint.direct(x), rtol=0, atol=1e-5
    )
    backend.close()
    down = make_client(
        ServiceSpec(name="far", kind="triton", model="liver-seg", url=f"127.0.0.1:{free_port()}")
    )
    with pytest.raises(
        InferenceServiceError,
        match=r"inference service 'far' \(Triton http 127.0.0.1:\d+\): model 'liver-seg' is unreachable",
    ):
        down.predict(x)


# --------------------------------------------------------------------------- health and metadata


def test_health_and_metadata(endpoint: Endpoint) -> None:
    client = triton_http.InferenceServerClient(endpoint.host)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("liver-seg")
        assert client.is_model_ready("liver-half", "1")
        assert not client.is_model_ready("nope")
        assert client.get_server_metadata()["name"] == "clara-ray"
        meta = client.get_model_metadata("liver-half")
        assert meta == {
            "name": "liver-half",
            "versions": ["1", "2"],
            "platform": "pytorch_libtorch",
            "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 1, 128, 128]}],
            "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 1, 128, 128]}],
        }
        assert client.get_model_metadata("liver-half", "2") == meta
        config = client.get_model_config("liver-half")
        assert config["max_batch_size"] == 8
        assert config["parameters"]["clara_gpu"] == {"string_value": "0.5"}
        index = client.get_model_repository_index()
        assert {(m["name"], m["version"]) for m in index} == {
            ("liver-half", "1"),
            ("liver-half", "2"),
            ("liver-seg", "1"),
        }
    finally:
        client.close()
    assert get(endpoint, "/v2/health/live") == (200, b"")
    assert get(endpoint, "/v2/health/ready") == (200, b"")
    assert get(endpoint, "/v2/models/liver-half/versions/2/ready") == (200, b"")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/nope", 404, "unknown model 'nope'; models served: liver-half, liver-seg"),
        (
            "/v2/models/liver-seg/versions/4",
            404,
            "model 'liver-seg' has no version '4'; versions served: 1",
        ),
        ("/v2/models/nope/ready", 404, "unknown model 'nope'"),
        ("/v2/models/liver-seg/versions/4/ready", 404, "model 'liver-seg' has no version '4'"),
        ("/v2/models/liver-seg/versions/4/config", 404, "model 'liver-seg' has no version '4'"),
        ("/v2/nothing/here", 404, "Not Found"),
        ("/v2/models/liver-seg/predict", 404, "no route /v2/models/liver-seg/predict"),
        ("/v2/models/liver-seg/infer", 405, "GET is not allowed on the infer route"),
    ],
)
def test_metadata_errors(endpoint: Endpoint, path: str, status: int, message: str) -> None:
    assert_error(*get(endpoint, path), status, message)


# --------------------------------------------------------------------------- bad requests


def _json_request(
    datatype: str = "FP32",
    shape: list[int] | None = None,
    data: list[Any] | None = None,
    name: str = "INPUT__0",
) -> bytes:
    shape = shape or [1, 1, 128, 128]
    count = int(np.prod(shape))
    return json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "data": data if data is not None else [0] * count,
                }
            ]
        }
    ).encode()


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        (
            "/v2/models/nope/infer",
            _json_request(),
            {},
            404,
            "unknown model 'nope'; models served: liver-half, liver-seg",
        ),
        (
            "/v2/models/liver-seg/versions/2/infer",
            _json_request(),
            {},
            404,
            "model 'liver-seg' has no version '2'; versions served: 1",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(shape=[1, 128, 128]),
            {},
            400,
            "input 'INPUT__0' of model 'liver-seg': shape [1, 128, 128] does not match the model's [-1, 1, 128, 128]",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(shape=[1, 1, 64, 64]),
            {},
            400,
            "shape [1, 1, 64, 64] does not match the model's [-1, 1, 128, 128]",
        ),
        (
            "/v2/models/liver-half/infer",
            _json_request(shape=[9, 1, 128, 128]),
            {},
            400,
            "batch size 9 is outside 1..8 (max_batch_size of model 'liver-half')",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(datatype="FP64"),
            {},
            400,
            "input 'INPUT__0' of model 'liver-seg': datatype FP64 does not match the model's FP32",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(datatype="FLOAT"),
            {},
            400,
            "input 'INPUT__0': unknown datatype 'FLOAT'",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(name="IMAGE"),
            {},
            400,
            "model 'liver-seg' has no input 'IMAGE'; expected inputs: INPUT__0",
        ),
        (
            "/v2/models/liver-seg/infer",
            _json_request(data=[0.0] * 10),
            {},
            400,
            "input 'INPUT__0': shape [1, 1, 128, 128] needs 16384 elements, got 10 in 'data'",
        ),
        (
            "/v2/models/liver-seg/infer",
            b'{"inputs": [',
            {},
            400,
            "malformed request: the JSON header is not valid JSON",
        ),
        (
            "/v2/models/liver-seg/infer",
            b"{}",
            {HEADER_LENGTH: "x"},
            400,
            f"{HEADER_LENGTH} must be an integer, got 'x'",
        ),
        (
            "/v2/models/liver-seg/infer",
            b"{}",
            {HEADER_LENGTH: "99"},
            400,
            f"{HEADER_LENGTH} is 99 but the body has 2 bytes",
        ),
        (
            "/v2/models/liver-seg/infer",
            b"x" * (LIMIT + 1),
            {},
            400,
            f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes",
        ),
        (
            "/v2/models/liver-seg/infer",
            b"\0" * 10,
            {"Content-Encoding": "gzip"},
            400,
            "request body is not valid gzip data",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "missing-dim",
        "wrong-dims",
        "batch-too-large",
        "wrong-dtype",
        "unknown-dtype",
        "unknown-input",
        "data-length",
        "malformed-json",
        "bad-header",
        "header-past-body",
        "too-large",
        "bad-gzip",
    ],
)
def test_bad_requests(
    endpoint: Endpoint, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    got_status, _, raw = post(endpoint, path, body, {"Content-Type": "application/json", **headers})
    assert_error(got_status, raw, status, message)


def test_tritonclient_sees_errors_and_the_model_still_serves(endpoint: Endpoint) -> None:
    client = triton_http.InferenceServerClient(endpoint.host)
    try:
        x = slices(1)
        wrong = triton_http.InferInput("INPUT__0", [1, 1, 128, 128], "FP64").set_data_from_numpy(
            x.astype(np.float64)
        )
        with pytest.raises(
            InferenceServerException, match="datatype FP64 does not match the model's FP32"
        ) as info:
            client.infer("liver-seg", [wrong])
        assert info.value.status() == "400"
        with pytest.raises(InferenceServerException, match="unknown model 'nope'") as info:
            client.infer("nope", [wrong])
        assert info.value.status() == "404"
        unknown_output = [triton_http.InferRequestedOutput("PROBS")]
        ok = triton_http.InferInput("INPUT__0", [1, 1, 128, 128], "FP32").set_data_from_numpy(x)
        with pytest.raises(
            InferenceServerException,
            match="model 'liver-seg' has no output 'PROBS'; expected outputs: OUTPUT__0",
        ):
            client.infer("liver-seg", [ok], outputs=unknown_output)
        too_big = np.zeros((LIMIT // (128 * 128 * 4) + 1, 1, 128, 128), np.float32)
        with pytest.raises(InferenceServerException, match="exceeds the limit") as info:
            client.infer(
                "liver-seg",
                [
                    triton_http.InferInput(
                        "INPUT__0", list(too_big.shape), "FP32"
                    ).set_data_from_numpy(too_big)
                ],
            )
        assert info.value.status() == "400"
        np.testing.assert_allclose(
            client.infer("liver-seg", [ok]).as_numpy("OUTPUT__0"), endpoint.direct(x), atol=1e-5
        )
    finally:
        client.close()


# --------------------------------------------------------------------------- batching and GPUs


def _replica_stats(model: str, replicas: int) -> dict[str, dict[str, Any]]:
    from ray import serve

    handle = serve.get_deployment_handle(
        deployment_name(model), app_name=model_app_name(APP, model)
    )
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(seen) < replicas and time.monotonic() < deadline:
        stats = handle.stats.remote().result(timeout_s=30)
        seen[stats["replica"]] = stats
    assert len(seen) == replicas, seen
    return seen


def test_concurrent_requests_are_batched(endpoint: Endpoint) -> None:
    x = slices(1, seed=5)
    body, header_length = encode_request({"INPUT__0": x})
    expected = endpoint.direct(x, "liver-half")

    def one(_: int) -> np.ndarray:
        status, headers, raw = post(
            endpoint, "/v2/models/liver-half/infer", body, {HEADER_LENGTH: str(header_length)}
        )
        assert status == 200, raw
        return decode_response(raw, int(headers[HEADER_LENGTH.lower()])).arrays()["OUTPUT__0"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(one, range(32)))
    for out in outputs:
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    stats = _replica_stats("liver-half", 2)
    batches = [b for s in stats.values() for b in s["batches"]]
    assert sum(requests for requests, _ in batches) >= 32
    assert max(rows for _, rows in batches) > 1, batches
    assert all(rows <= 8 for _, rows in batches), batches
    assert all(
        s["max_batch_size"] == 8 and s["batch_wait_timeout_s"] == 0.1 for s in stats.values()
    )


def test_half_gpu_model_puts_two_replicas_on_one_gpu(endpoint: Endpoint) -> None:
    half = _replica_stats("liver-half", 2)
    gpu_sets = [tuple(s["gpu_ids"]) for s in half.values()]
    assert all(len(ids) == 1 for ids in gpu_sets), gpu_sets
    assert gpu_sets[0] == gpu_sets[1], gpu_sets
    whole = _replica_stats("liver-seg", 1)
    (liver,) = whole.values()
    assert len(liver["gpu_ids"]) == 1
    assert liver["gpu_ids"] != list(gpu_sets[0])  # the whole GPU is the other one
    assert liver["device"] == "cpu"  # fake GPUs: torch sees no CUDA


def test_metrics_reach_the_prometheus_endpoint(endpoint: Endpoint) -> None:
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    x = slices(1)
    client = make_client(ServiceSpec(name="liver", kind="serve", model="liver-seg"))
    client.predict(x)
    post(endpoint, "/v2/models/liver-seg/infer", b"{bad")
    wanted = (  # Ray exports application metrics with a ray_ prefix
        "ray_clara_inference_requests_total{",
        "ray_clara_inference_batch_size_bucket{",
        "ray_clara_inference_latency_seconds_bucket{",
    )

    def requests(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if line.startswith("ray_clara_inference_requests_total{")
        ]

    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        if all(w in text for w in wanted) and any('code="400"' in line for line in requests(text)):
            break
        time.sleep(2)
    lines = requests(text)
    assert any('model="liver-seg"' in line and 'code="200"' in line for line in lines), lines
    assert any('model="liver-seg"' in line and 'code="400"' in line for line in lines), lines
    assert all(w in text for w in wanted)


# --------------------------------------------------------------------------- the shipped Serve config


def test_shipped_serve_config_builds() -> None:
    """serve/inference.yaml validates, and each application's import path and args build it:
    the server's routes on /v2, and the liver-seg model's own application under them."""
    import yaml
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "serve" / "inference.yaml").read_text())
    )
    apps = {app.name: app for app in config.applications}
    assert apps[APP].route_prefix == "/v2"
    model_app = apps[model_app_name(APP, "liver-seg")]
    assert model_app.route_prefix == "/v2/models/liver-seg"
    for app in apps.values():
        built = call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), app.args)
        assert type(built).__name__ == "Application"


def test_builder_rejects_bad_args(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from serve.inference import build_app
    from serve.inference_args import InferenceAppArgs

    with pytest.raises(ValidationError, match="model_repositry"):
        InferenceAppArgs.model_validate({"model_repositry": "models"})
    with pytest.raises(
        ValidationError, match=r"min_replicas \(3\) must not exceed max_replicas \(2\)"
    ):
        InferenceAppArgs.model_validate({"autoscaling": {"min_replicas": 3, "max_replicas": 2}})
    repository = make_repository(tmp_path / "models")
    with pytest.raises(UnknownModelError, match="model 'lung' is not in the model repository"):
        build_app(InferenceAppArgs(model_repository=str(repository), models=["lung"]))
    from clara_ray.inference.errors import ModelRepositoryError

    with pytest.raises(
        ModelRepositoryError,
        match="max_batch_size 16 of the inference app exceeds model 'liver-half'",
    ):
        build_app(InferenceAppArgs(model_repository=str(repository), max_batch_size=16))
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "config.pbtxt").write_text(
        LIVER_CONFIG.replace('"liver-seg"', '"broken"')
    )
    with pytest.raises(
        ModelRepositoryError, match="missing model file for version 1 of model 'broken'"
    ):
        build_app(InferenceAppArgs(model_repository=str(repository)))
    assert build_app(InferenceAppArgs(model_repository=str(repository), skip_invalid_models=True))
