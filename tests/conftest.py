"""Shared fixtures: one Ray instance for the session, and a Core per test in its own namespace."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = Path(__file__).resolve().parent / "pipelines"


def _isolate_from_the_users_home() -> None:
    """The suite sees what a fresh machine sees: an empty home (no Ray token, no data dir,
    no caches) and none of the user's clara-ray or Ray connection settings; Ray runs with
    token authentication, as the platform's entry points (CLI, ``clara_ray.run``) set it.

    Done at import, before anything imports Ray, which reads these once.
    """
    home = tempfile.mkdtemp(prefix="clara-ray-test-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["HOME"] = home
    for name in list(os.environ):
        if name.startswith("CLARA_RAY_") or name in (
            "RAY_ADDRESS",
            "RAY_AUTH_TOKEN",
            "RAY_AUTH_TOKEN_PATH",
        ):
            del os.environ[name]
    os.environ["RAY_AUTH_MODE"] = "token"


_isolate_from_the_users_home()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``tests/multinode`` runs in a pytest process of its own (``make test`` runs it after
    the rest): it starts multi-node Ray clusters, and a process holds one Ray instance.
    It is collected only when named on the command line."""
    if collection_path == Path(__file__).parent / "multinode":
        named = [Path(a.split("::")[0]).resolve() for a in config.args]
        return not any(a == collection_path or collection_path in a.parents for a in named)
    return None


def wait_for(
    condition: Callable[[], object], timeout: float = 60.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray with 4 CPUs and 2 declared (fake) GPUs, shared by all Ray tests.

    Its token is created where ``clara-ray up`` creates one (in the test home).
    """
    import ray

    from clara_ray.auth_token import ensure_local_token

    ensure_local_token()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=2,
        object_store_memory=300 * 1024 * 1024,
        include_dashboard=False,
        namespace="clara-tests",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def make_settings(tmp_path: Path, **env: str):
    """Settings with their own data dir and namespace, Serve off; ``env`` adds overrides."""
    from clara_ray.config.settings import load_settings

    return load_settings(
        env={
            "CLARA_RAY_DATA_DIR": str(tmp_path / "data"),
            "CLARA_RAY_RAY__NAMESPACE": f"t{uuid.uuid4().hex[:12]}",
            "CLARA_RAY_SERVE__ENABLED": "false",
            **env,
        }
    )


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path)


@pytest.fixture
def platform(ray_session: None, settings) -> Iterator:
    """A Core actor in a namespace of its own and a client for it; killed afterwards."""
    import ray

    from clara_ray.client import PlatformClient
    from clara_ray.platform import get_or_create_core

    core = get_or_create_core(settings)
    ray.get(core.ping.remote())
    client = PlatformClient.of_actor(settings, core)
    yield client
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == settings.ray.namespace:
            with contextlib.suppress(ValueError):  # a job runner that finished meanwhile
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


@pytest.fixture
def payload_dir(tmp_path: Path) -> Path:
    d = tmp_path / "payload"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    (d / "sub").mkdir()
    (d / "sub" / "b.bin").write_bytes(os.urandom(1000))
    return d
