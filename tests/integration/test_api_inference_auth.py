"""The /v2 inference app behind the API token: health stays open, everything else asks for it,
and KServe v2 clients that send it (plain HTTP, tritonclient) are served as before."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port
from tests.integration.test_inference_serve import make_repository

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "inference-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def host(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from serve.inference import deploy
    from serve.inference_args import InferenceAppArgs

    repository = make_repository(tmp_path_factory.mktemp("inference-auth") / "models")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = InferenceAppArgs(
            model_repository=str(repository), models=["liver-seg"], num_cpus=0, api_token=TOKEN
        )
        deploy(args, name="clara-inference-auth", route_prefix="/v2")
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_health_is_open_and_the_rest_needs_the_token(host: str) -> None:
    with httpx.Client(base_url=f"http://{host}", timeout=60) as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/liver-seg", "/v2/models/liver-seg/config"):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                answer = http.get(path, headers=headers)
                assert answer.status_code == 401, path
                assert answer.headers["www-authenticate"] == "Bearer"
                assert answer.json() == {"error": "missing or wrong API token"}
            assert http.get(path, headers=BEARER).status_code == 200, path
        assert http.post("/v2/models/liver-seg/infer", json={}).status_code == 401
        assert http.get("/v2/health/live", params={"access_token": TOKEN}).status_code == 200
        assert http.get("/v2", params={"access_token": TOKEN}).status_code == 401


def test_tritonclient_with_the_token(host: str) -> None:
    client = triton_http.InferenceServerClient(host)
    assert client.is_server_live() and client.is_server_ready()
    with pytest.raises(InferenceServerException, match="missing or wrong API token"):
        client.get_server_metadata()
    assert client.get_server_metadata(headers=BEARER)["name"] == "clara-ray"
    x = np.zeros((1, 1, 128, 128), dtype=np.float32)
    tensor = triton_http.InferInput("INPUT__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer("liver-seg", [tensor], headers=BEARER)
    assert result.as_numpy("OUTPUT__0").shape == (1, 1, 128, 128)
    with pytest.raises(InferenceServerException, match="missing or wrong API token"):
        client.infer("liver-seg", [tensor])
    client.close()
