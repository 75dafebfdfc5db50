"""Inference serving: the Ray Serve inference apps against a real Triton Inference Server.

Both serve the same TorchScript file (``models/liver-seg/1/model.pt``) with the
same dynamic batching (at most :data:`MAX_BATCH` rows, :data:`DELAY_US` µs
queue delay) and one model instance with one torch thread, and one run drives
both with the same client (``tritonclient.http``, binary tensors, one client per
thread), at each of :data:`CONCURRENCY` concurrent clients, with the same inputs
(one 128x128 CT slice per request).  Triton is nvidia-pytriton's tritonserver
2.51 (the model runs in its Python backend), started by
``tests/peer/triton_server.py`` in its own virtual environment.  Serve runs as
the platform deploys it (:func:`serve.inference.deploy`), with the Ray
processes' environment of ``serve.ingress`` (:func:`clara_ray.serving.ingress_env`;
default ``haproxy``).  Rounds alternate between the servers after a warm-up;
reported per concurrency and server: requests/s, p50 and p99 latency as median
and range over the rounds, and the per-round ratios Serve over Triton.  Each round
also drives Triton over KServe v2 gRPC (``tritonclient.grpc``, ``triton_grpc``): its
throughput over Triton's HTTP says whether a gRPC endpoint would serve tritonclient
users better than HTTP.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "liver-seg"
CONCURRENCY = (8, 32)
MAX_BATCH = 8
DELAY_US = 2000
TORCH_THREADS = 1
"""Intra-op threads of the model on both servers: a Serve replica with num_cpus 0 gets
OMP_NUM_THREADS=1 from Ray; the Triton model process gets the same."""


def _inputs(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    body = np.where(((yy - 64) / 50) ** 2 + ((xx - 64) / 60) ** 2 < 1, 40.0, -1000.0)
    return [(body + rng.normal(0, 10, (1, 1, 128, 128))).astype(np.float32) for _ in range(count)]


def _client(protocol: str, url: str) -> tuple[Any, Any]:
    """(tritonclient module, a client of it for ``url``) for ``http`` or ``grpc``."""
    if protocol == "grpc":
        import tritonclient.grpc as triton_grpc

        return triton_grpc, triton_grpc.InferenceServerClient(url)
    import tritonclient.http as triton_http

    return triton_http, triton_http.InferenceServerClient(url, network_timeout=300)


def _drive(
    url: str, inputs: list[np.ndarray], concurrency: int, protocol: str = "http"
) -> tuple[float, list[float]]:
    """Send every input once from ``concurrency`` threads, each with its own tritonclient of
    ``protocol`` (``http`` or ``grpc``); returns (wall seconds, latencies)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    queue = list(range(len(inputs)))

    def worker() -> None:
        triton_client, client = _client(protocol, url)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                x = inputs[i]
                inp = triton_client.InferInput("INPUT__0", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                start = time.perf_counter()
                client.infer(MODEL, [inp]).as_numpy("OUTPUT__0")
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"inference benchmark request failed against {url}: {errors[0]}")
    return wall, latencies


def _figures(wall: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
    }


def _warm(url: str, x: np.ndarray) -> np.ndarray:
    """Run every batch size twice (TorchScript specialises per shape); return the output for ``x``."""
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(url, network_timeout=300)
    try:
        for rows in [*range(1, MAX_BATCH + 1)] * 2:
            batch = np.repeat(x, rows, axis=0)
            inp = triton_http.InferInput("INPUT__0", list(batch.shape), "FP32").set_data_from_numpy(
                batch
            )
            client.infer(MODEL, [inp])
        inp = triton_http.InferInput("INPUT__0", list(x.shape), "FP32").set_data_from_numpy(x)
        return client.infer(MODEL, [inp]).as_numpy("OUTPUT__0")  # type: ignore[no-any-return]
    finally:
        client.close()


def run(rounds: int = 3, ingress: str = "haproxy") -> dict[str, Any]:
    """Warm both servers, then ``rounds`` alternating rounds per concurrency."""
    import os

    from clara_ray.config.settings import ServeSettings
    from clara_ray.serving import ingress_env
    from tests.peer.triton_server import TritonServer, free_port

    port = free_port()
    os.environ.update(ingress_env(ServeSettings(ingress=ingress, port=port)))  # before Ray
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())  # beside a running platform
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    os.environ["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] = str(free_port())
    import ray
    from ray import serve

    from serve.inference import deploy
    from serve.inference_args import InferenceAppArgs

    repository = ROOT / "models"
    if not (repository / MODEL / "1" / "model.pt").is_file():
        raise RuntimeError(
            f"{repository / MODEL / '1' / 'model.pt'} is missing: train it first "
            "(python -m pipelines.ct_liver_ai.train --out models/liver-seg/1/model.pt --seed 0)"
        )
    inputs = _inputs(max(512, 16 * max(CONCURRENCY)))
    names = ("serve", "triton", "triton_grpc")
    raw: dict[int, dict[str, list[dict[str, float]]]] = {
        c: {n: [] for n in names} for c in CONCURRENCY
    }
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            args = InferenceAppArgs(
                model_repository=str(repository),
                models=[MODEL],
                num_cpus=0,
                max_batch_size=MAX_BATCH,
                batch_wait_timeout_s=DELAY_US / 1e6,
            )
            deploy(args, blocking=False)
            with TritonServer(
                repository,
                [MODEL],
                Path(tmp),
                max_batch_size=MAX_BATCH,
                delay_us=DELAY_US,
                torch_threads=TORCH_THREADS,
            ) as triton:
                urls = {"serve": f"127.0.0.1:{port}", "triton": triton.http_url}
                outputs = {name: _warm(url, inputs[0]) for name, url in urls.items()}
                max_diff = float(np.max(np.abs(outputs["serve"] - outputs["triton"])))
                sides = {**{n: (u, "http") for n, u in urls.items()},
                         "triton_grpc": (triton.grpc_url, "grpc")}  # fmt: skip
                for concurrency in CONCURRENCY:
                    for url, protocol in sides.values():  # connections
                        _drive(url, inputs[: 4 * concurrency], concurrency, protocol)
                    for _ in range(rounds):
                        for name, (url, protocol) in sides.items():
                            raw[concurrency][name].append(
                                _figures(*_drive(url, inputs, concurrency, protocol))
                            )
        finally:
            serve.shutdown()
            ray.shutdown()
    return {
        "benchmark": (
            f"{MODEL} TorchScript, {len(inputs)} requests of 1x1x128x128 FP32 per round, "
            f"tritonclient.http binary (and tritonclient.grpc against Triton's gRPC endpoint); "
            f"dynamic batching {MAX_BATCH} rows / {DELAY_US} us on "
            f"both; one model instance, CPU, {TORCH_THREADS} torch thread; Serve ingress "
            f"{ingress}; {rounds} alternating rounds per concurrency after warm-up"
        ),
        "max_abs_output_difference": max_diff,
        **{f"concurrency_{c}": _compare(raw[c]) for c in CONCURRENCY},
    }


def _compare(rounds: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per server, each figure's median and range; then the per-round ratios Serve/Triton."""
    from benchmarks.stats import ratio_spread, spread

    keys = ("requests_per_s", "p50_ms", "p99_ms")
    figures = {
        name: {k: spread([r[k] for r in rs], 1) for k in keys} for name, rs in rounds.items()
    }
    serve_r, triton_r = rounds["serve"], rounds["triton"]
    return {
        **figures,
        "ratio_throughput_serve_over_triton": ratio_spread(
            [r["requests_per_s"] for r in serve_r], [r["requests_per_s"] for r in triton_r]
        ),
        "ratio_p50_serve_over_triton": ratio_spread(
            [r["p50_ms"] for r in serve_r], [r["p50_ms"] for r in triton_r]
        ),
        "ratio_p99_serve_over_triton": ratio_spread(
            [r["p99_ms"] for r in serve_r], [r["p99_ms"] for r in triton_r]
        ),
        "ratio_throughput_triton_grpc_over_triton_http": ratio_spread(
            [r["requests_per_s"] for r in rounds["triton_grpc"]],
            [r["requests_per_s"] for r in triton_r],
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
