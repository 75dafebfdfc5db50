"""A real Triton Inference Server (through nvidia-pytriton) for tests and benchmarks: always stopped.

nvidia-pytriton 0.7 needs ``numpy<2``, so it lives in a virtual environment
of its own, ``<repo>/.venv-triton`` (built once by :func:`ensure_venv` with
``nvidia-pytriton``, ``tritonclient[all]`` and the same torch as the project,
then reused while its requirements are unchanged).  :class:`TritonServer` runs
a small script in that environment which binds TorchScript files of a
Triton-layout model repository as pytriton models (same names, inputs,
outputs, max batch size and a dynamic batcher) and serves them on free HTTP,
gRPC and metrics ports of 127.0.0.1.  The Python backend's stub links
``libpython3.11.so``: the interpreter's own LIBDIR goes first on
``LD_LIBRARY_PATH``.  Usage::

    with TritonServer(repository, models=["liver-seg"], workdir=tmp) as triton:
        client = tritonclient.http.InferenceServerClient(triton.http_url)

A server that cannot be built or started raises :class:`TritonServerError`
with the tail of its log; tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from clara_ray.inference.repository import ModelRepository
from clara_ray.inference.torchscript_check import check_torchscript

__all__ = [
    "VENV",
    "TritonServer",
    "TritonServerError",
    "ensure_venv",
    "free_port",
    "triton_fixture",
]

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-triton"
"""The Triton peer's own virtual environment (git-ignored)."""


def _requirements() -> list[str]:
    import torch

    return [
        "nvidia-pytriton>=0.7,<0.8",
        "tritonclient[all]",
        f"torch=={torch.__version__.split('+')[0]}",
    ]


class TritonServerError(RuntimeError):
    """The Triton peer could not be built or started; the message carries its log tail."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path = VENV, timeout_s: float = 1800) -> Path:
    """Build (once) the Triton peer's virtual environment; return its interpreter."""
    requirements = _requirements()
    stamp = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()
    marker = venv / ".clara-ray-requirements"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build it once
        if marker.is_file() and marker.read_text() == stamp and _python(venv).exists():
            return _python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        log = venv.parent / f"{venv.name}.build.log"
        with open(log, "w") as out:
            for cmd in (
                [sys.executable, "-m", "venv", str(venv)],
                [str(_python(venv)), "-m", "pip", "install", "--no-input", *requirements],
            ):
                try:
                    done = subprocess.run(
                        cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
                    )
                except subprocess.TimeoutExpired:
                    raise TritonServerError(
                        f"building {venv} timed out after {timeout_s} s: {' '.join(cmd)}"
                    ) from None
                if done.returncode != 0:
                    raise TritonServerError(
                        f"building {venv} failed ({' '.join(cmd)} exited {done.returncode}); "
                        f"log {log}:\n{_tail(log)}"
                    )
        marker.write_text(stamp)
        return _python(venv)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    """A free TCP port of 127.0.0.1 (importing this module leaves the environment alone)."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


SERVER_SCRIPT = r'''
"""Serve TorchScript files with pytriton (runs in the Triton peer's own environment)."""
import json
import sys

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

spec = json.loads(sys.argv[1])


def make_infer(model):
    module = torch.jit.load(model["file"], map_location="cpu").eval()

    def run(**inputs):
        args = [torch.from_numpy(np.array(inputs[name], copy=True)) for name in model["input_order"]]
        with torch.inference_mode():
            out = module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {name: o.cpu().numpy() for name, o in zip(model["output_order"], outs)}

    if model["max_batch_size"] > 0:
        return batch(run)
    return lambda requests: [run(**request) for request in requests]


config = TritonConfig(
    http_address="127.0.0.1",
    grpc_address="127.0.0.1",
    http_port=spec["http_port"],
    grpc_port=spec["grpc_port"],
    metrics_port=spec["metrics_port"],
)
with Triton(config=config, workspace=spec["workspace"]) as triton:
    for model in spec["models"]:
        batcher = DynamicBatcher(max_queue_delay_microseconds=model["delay_us"])
        triton.bind(
            model_name=model["name"],
            infer_func=make_infer(model),
            inputs=[Tensor(name=t["name"], dtype=np.dtype(t["dtype"]), shape=tuple(t["dims"])) for t in model["inputs"]],
            outputs=[Tensor(name=t["name"], dtype=np.dtype(t["dtype"]), shape=tuple(t["dims"])) for t in model["outputs"]],
            config=ModelConfig(
                batching=model["max_batch_size"] > 0,
                max_batch_size=max(model["max_batch_size"], 1),
                batcher=batcher,
            ),
        )
    print("clara-ray: serving", [m["name"] for m in spec["models"]], flush=True)
    triton.serve()
'''


class TritonServer:
    """A Triton Inference Server process serving TorchScript models of a model repository.

    ``max_batch_size`` / ``delay_us`` override each model's batching (default:
    its config, and 0 us when the config has no dynamic_batching);
    ``torch_threads`` sets the model process's ``OMP_NUM_THREADS`` (default:
    inherited).
    """

    def __init__(
        self,
        repository: str | Path,
        models: list[str] | None = None,
        workdir: str | Path | None = None,
        *,
        max_batch_size: int | None = None,
        delay_us: int | None = None,
        torch_threads: int | None = None,
        ready_timeout_s: float = 180.0,
        venv: Path = VENV,
    ) -> None:
        self.repository = ModelRepository(repository)
        self.models = models
        self.workdir = Path(workdir) if workdir is not None else None
        self.max_batch_size = max_batch_size
        self.delay_us = delay_us
        self.torch_threads = torch_threads
        self.ready_timeout_s = ready_timeout_s
        self.venv = venv
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_file(self) -> Path:
        return self._dir / "triton.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="clara-triton-")
            return Path(self._tmp.name)
        return self.workdir

    def _spec(self) -> dict[str, Any]:
        import torch

        models = []
        for entry in self.repository.models(self.models):
            config = entry.config
            module = torch.jit.load(str(entry.model_file()), map_location="cpu")
            input_order, output_order = check_torchscript(config, module, entry.model_file())
            from clara_ray.inference.tensors import DATATYPES

            def tensors(items: Any) -> list[dict[str, Any]]:
                return [
                    {"name": t.name, "dtype": DATATYPES[t.datatype].str, "dims": list(t.dims)}
                    for t in items
                ]

            delay = self.delay_us
            if delay is None:
                batching = config.dynamic_batching
                delay = batching.max_queue_delay_microseconds if batching else 0
            models.append(
                {
                    "name": entry.name,
                    "file": str(entry.model_file().resolve()),
                    "max_batch_size": self.max_batch_size
                    if self.max_batch_size is not None
                    else config.max_batch_size,
                    "delay_us": delay,
                    "inputs": tensors(config.inputs),
                    "outputs": tensors(config.outputs),
                    "input_order": input_order,
                    "output_order": output_order,
                }
            )
        self.http_port, self.grpc_port, self.metrics_port = _free_ports(3)
        workspace = self._dir / "workspace"
        shutil.rmtree(workspace, ignore_errors=True)
        return {
            "models": models,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "workspace": str(workspace),
        }

    def start(self) -> TritonServer:
        python = ensure_venv(self.venv)
        spec = self._spec()
        self._dir.mkdir(parents=True, exist_ok=True)
        script = self._dir / "serve_triton.py"
        script.write_text(SERVER_SCRIPT)
        libdir = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAY_"))
        }
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
        )
        if self.torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(self.torch_threads)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [str(python), str(script), json.dumps(spec)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir,
                env=env,
                start_new_session=True,  # its own process group: tritonserver and stubs stop with it
            )
        try:
            self._wait_ready([m["name"] for m in spec["models"]])
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, names: list[str]) -> None:
        import tritonclient.http as triton_http

        deadline = time.monotonic() + self.ready_timeout_s
        client = triton_http.InferenceServerClient(
            self.http_url, connection_timeout=2, network_timeout=5
        )
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise TritonServerError(
                        f"Triton exited with status {self.process.returncode} before it was ready; "
                        f"log {self.log_file}:\n{_tail(self.log_file)}"
                    )
                with contextlib.suppress(Exception):  # not listening yet
                    if client.is_server_ready() and all(client.is_model_ready(n) for n in names):
                        return
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"Triton was not ready within {self.ready_timeout_s} s; "
                        f"log {self.log_file}:\n{_tail(self.log_file)}"
                    )
                time.sleep(0.25)
        finally:
            client.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:  # stubs and tritonserver left in the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def triton_fixture(repository: Callable[[Path], Path], **kwargs: Any) -> Any:
    """A module-scoped fixture: a Triton server for the repository ``repository(tmp)`` builds."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
        tmp = tmp_path_factory.mktemp("triton")
        with TritonServer(repository(tmp / "models"), workdir=tmp / "server", **kwargs) as server:
            yield server

    return fixture
