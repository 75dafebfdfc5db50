"""A real Triton Inference Server (nvidia-pytriton) serving the same TorchScript file as Ray Serve:
tritonclient gets the same output from both and from the model itself; the clients agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from clara_ray.inference.clients import make_client
from clara_ray.inference.errors import InvalidRequestError, UnknownModelError
from clara_ray.inference.repository import ModelRepository
from clara_ray.inference.torchscript import TorchScriptModel
from clara_ray.pipeline.spec import ServiceSpec
from tests.conftest import ROOT, free_port
from tests.integration.test_inference_serve import make_repository, slices
from tests.peer.triton_server import TritonServer, triton_fixture

pytestmark = [pytest.mark.peer, pytest.mark.ray, pytest.mark.slow]

ATOL = 1e-5
triton = triton_fixture(make_repository, models=["liver-seg"])


@pytest.fixture(scope="module")
def serve_url(ray_session: None, triton: TritonServer) -> Iterator[str]:
    """The Serve inference app for the same repository, plus `clara-forward`, whose model
    deployment forwards to the Triton server (the TritonBackend option)."""
    from ray import serve

    from serve.inference import deploy
    from serve.inference_args import InferenceAppArgs

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = InferenceAppArgs(
            model_repository=str(triton.repository.root), models=["liver-seg"], num_cpus=0
        )
        deploy(args, name="clara-inference", route_prefix="/v2")
        forward = args.model_copy(update={"triton_url": triton.http_url})
        deploy(forward, name="clara-forward", route_prefix="/forward")
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()


def direct(repository: Path, x: np.ndarray) -> np.ndarray:
    entry = ModelRepository(repository).model("liver-seg")
    return TorchScriptModel.load(entry.model_file(), "cpu")(x)


def http_infer(url: str, x: np.ndarray, binary: bool = True) -> np.ndarray:
    client = triton_http.InferenceServerClient(url)
    try:
        inp = triton_http.InferInput("INPUT__0", list(x.shape), "FP32").set_data_from_numpy(
            x, binary_data=binary
        )
        out = triton_http.InferRequestedOutput("OUTPUT__0", binary_data=binary)
        return client.infer("liver-seg", [inp], outputs=[out]).as_numpy("OUTPUT__0")
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_serve_and_model_agree(triton: TritonServer, serve_url: str, binary: bool) -> None:
    x = slices(4, seed=11)
    expected = direct(triton.repository.root, x)
    from_triton = http_infer(triton.http_url, x, binary)
    from_serve = http_infer(serve_url, x, binary)
    np.testing.assert_allclose(from_triton, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(from_serve, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(from_serve, from_triton, rtol=0, atol=ATOL)


def test_triton_grpc(triton: TritonServer) -> None:
    x = slices(2, seed=12)
    client = triton_grpc.InferenceServerClient(triton.grpc_url)
    try:
        inp = triton_grpc.InferInput("INPUT__0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("liver-seg", [inp]).as_numpy("OUTPUT__0")
    finally:
        client.close()
    np.testing.assert_allclose(got, direct(triton.repository.root, x), rtol=0, atol=ATOL)


def test_metadata_matches(triton: TritonServer, serve_url: str) -> None:
    theirs = triton_http.InferenceServerClient(triton.http_url)
    ours = triton_http.InferenceServerClient(serve_url)
    try:
        a, b = theirs.get_model_metadata("liver-seg"), ours.get_model_metadata("liver-seg")
        assert (a["name"], a["inputs"], a["outputs"]) == (b["name"], b["inputs"], b["outputs"])
        assert (
            theirs.get_model_config("liver-seg")["max_batch_size"]
            == ours.get_model_config("liver-seg")["max_batch_size"]
        )
    finally:
        theirs.close()
        ours.close()


def test_both_reject_a_wrong_datatype_with_400(triton: TritonServer, serve_url: str) -> None:
    x = slices(1).astype(np.float64)
    for url in (triton.http_url, serve_url):
        client = triton_http.InferenceServerClient(url)
        try:
            inp = triton_http.InferInput("INPUT__0", list(x.shape), "FP64").set_data_from_numpy(x)
            with pytest.raises(InferenceServerException, match="FP64") as info:
                client.infer("liver-seg", [inp])
            assert info.value.status() == "400", url
        finally:
            client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_pipeline_clients_agree(triton: TritonServer, serve_url: str, protocol: str) -> None:
    x = slices(3, seed=13)
    url = triton.http_url if protocol == "http" else triton.grpc_url
    with make_client(
        ServiceSpec(name="liver", kind="triton", model="liver-seg", url=url, protocol=protocol)
    ) as t:
        from_triton = t.predict(x)
        assert t.metadata()["inputs"][0]["shape"] == [-1, 1, 128, 128]
        with pytest.raises(InvalidRequestError, match=r"inference service 'liver' \(Triton"):
            t.infer({"INPUT__0": x[:, 0]})
    missing = make_client(
        ServiceSpec(name="lung", kind="triton", model="lung-seg", url=url, protocol=protocol)
    )
    with pytest.raises(UnknownModelError, match=r"inference service 'lung' .*model 'lung-seg'"):
        missing.predict(x)
    from_serve = make_client(ServiceSpec(name="liver", kind="serve", model="liver-seg")).predict(x)
    np.testing.assert_allclose(from_triton, from_serve, rtol=0, atol=ATOL)
    np.testing.assert_allclose(from_triton, direct(triton.repository.root, x), rtol=0, atol=ATOL)


def test_serve_deployment_forwarding_to_triton(triton: TritonServer, serve_url: str) -> None:
    x = slices(2, seed=14)
    forwarded = make_client(
        ServiceSpec(name="liver", kind="serve", model="liver-seg", app="clara-forward")
    )
    np.testing.assert_allclose(
        forwarded.predict(x), direct(triton.repository.root, x), rtol=0, atol=ATOL
    )


def _pipeline_variant(tmp_path: Path, kind_lines: str, name: str) -> Path:
    """ct-liver-ai with its service switched to ``kind_lines`` (the one change a user makes);
    the model runs in the service, so the operator gives up its GPU request (the session's
    two fake GPUs are held by the Serve replicas)."""
    text = (ROOT / "pipelines" / "ct-liver-ai.yaml").read_text()
    text = text.replace("name: ct-liver-ai\n", f"name: {name}\n", 1)
    text = text.replace("    kind: serve\n", kind_lines, 1)
    text = text.replace(
        "requests: {cpu: 1, gpu: 1, memory: 4Gi}", "requests: {cpu: 1, memory: 4Gi}", 1
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_ai_pipeline_gives_identical_segmentations_through_serve_and_triton(
    platform, triton: TritonServer, serve_url: str, tmp_path: Path
) -> None:
    from clara_ray.operators.nrrd import read_nrrd
    from clara_ray.sample import generate_phantom, write_ct_series

    phantom = generate_phantom(slices=12, rows=128, columns=128, spacing=(2.5, 2.8, 2.8), seed=21)
    write_ct_series(phantom, tmp_path / "study")
    variants = {
        "serve": _pipeline_variant(tmp_path, "    kind: serve\n", "liver-via-serve"),
        "triton": _pipeline_variant(
            tmp_path, f"    kind: triton\n    url: {triton.http_url}\n", "liver-via-triton"
        ),
    }
    label_maps = {}
    for kind, pipeline in variants.items():
        job = platform.create_job(
            str(pipeline),
            str(tmp_path / "study"),
            parameters={"inference_service": "liver-seg", "destination": "none"},
            start=True,
        )
        try:
            described = platform.wait_job(job.job_id, timeout=150)
        except TimeoutError:
            raise AssertionError(str(platform.core.describe_job(job.job_id))) from None
        assert described["status"] == "Healthy", described["reason"]
        log = platform.logs(job.job_id, "liver")["liver"]
        assert "service 'liver-seg'" in log  # the model ran in the service, not in the task
        platform.download(job.job_id, "label-map", tmp_path / kind)
        with open(tmp_path / kind / "labels.nrrd", "rb") as f:
            label_maps[kind], _ = read_nrrd(f)
    assert label_maps["serve"].shape == phantom.hu.shape
    assert label_maps["serve"].any()
    np.testing.assert_array_equal(label_maps["serve"], label_maps["triton"])
