"""A model deployment answers a failure it did not foresee with a KServe error, and keeps serving."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.requests import Request

import serve.model_deployment as model_deployment
from clara_ray.inference.repository import ModelRepository
from serve.inference_args import ModelPlan

CONFIG = """
name: "tiny"
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


@pytest.fixture
def deployment(tmp_path: Path) -> Any:
    (tmp_path / "tiny" / "1").mkdir(parents=True)
    (tmp_path / "tiny" / "config.pbtxt").write_text(CONFIG)
    torch.jit.save(torch.jit.script(Double()), str(tmp_path / "tiny" / "1" / "model.pt"))
    entry = ModelRepository(tmp_path).model("tiny")
    plan = ModelPlan(entry, 4, 0.001, "cpu", None, "http", 1 << 20, None)
    return model_deployment.ModelDeployment.func_or_class(plan)


async def call(deployment: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the deployment's ASGI entry (all of a test's calls share its loop)."""
    scope = {
        "type": "http",
        "method": method,
        "path": "/v2/models/tiny" + path,
        "root_path": "/v2/models/tiny",
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    response = await deployment(Request(scope, receive))
    return response.status_code, bytes(response.body)


REQUEST = json.dumps(
    {"inputs": [{"name": "INPUT__0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()


def test_a_working_model_answers_its_routes(deployment: Any) -> None:
    async def scenario() -> None:
        status, body = await call(deployment, "GET", "")
        assert status == 200 and json.loads(body)["name"] == "tiny"
        status, body = await call(deployment, "POST", "/infer", REQUEST)
        assert status == 200, body
        assert json.loads(body)["outputs"][0]["data"] == [2.0, 4.0, 6.0]

    asyncio.run(scenario())


def test_an_unforeseen_failure_is_a_json_500_that_names_the_route(
    deployment: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_encoder(*args: Any) -> Any:
        raise KeyError("an encoder bug")

    async def scenario() -> None:
        monkeypatch.setattr(model_deployment, "infer_response", broken_encoder)
        with caplog.at_level(logging.ERROR, logger=model_deployment.__name__):
            status, body = await call(deployment, "POST", "/infer", REQUEST)
        assert status == 500
        message = json.loads(body)["error"]
        assert "'tiny'" in message and "POST /v2/models/tiny/infer" in message
        assert "KeyError" in message
        assert any("an encoder bug" in (r.exc_text or "") for r in caplog.records)

        monkeypatch.undo()
        status, body = await call(deployment, "POST", "/infer", REQUEST)
        assert status == 200, body

    asyncio.run(scenario())
