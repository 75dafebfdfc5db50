"""Multi-node fixtures: one ``ray.cluster_utils.Cluster`` on this machine for the whole
``tests/multinode`` session, worker nodes (fake GPUs) added and removed per test, and a
Core per test in its own namespace.

The head node has no CPU and carries the ``clara_head`` resource: the platform's actors
(which ask for no CPU) live there, operators never do. A process can be connected to one
Ray instance only, so this folder runs in a pytest process of its own (marker
``multinode``); the session Ray of ``tests/conftest.py`` (``ray_session``) must not be
used here, and a process in which Ray is already initialised fails at once.

The parent ``tests/conftest.py`` still applies: its import isolates the process from the
user's home (empty ``$HOME``, no ``CLARA_RAY_*`` / ``RAY_ADDRESS`` / token variables,
``RAY_AUTH_MODE=token``) before Ray is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, make_settings, wait_for

MIB = 1024 * 1024
NODE_OBJECT_STORE = 100 * MIB  # per node; Ray's minimum is 75 MiB
HEAD_RESOURCE = "clara_head"
# Dead nodes are noticed within ~2 s (Ray's default is 5 checks 3 s apart); a node removed
# with ``remove_node`` tells the GCS itself, this covers the other deaths.
HEAD_SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}


def pytest_configure(config: pytest.Config) -> None:
    # also registered in pyproject.toml; here so that the folder runs alone under
    # --strict-markers before (or without) that
    config.addinivalue_line(
        "markers", "multinode: runs on a multi-node ray.cluster_utils.Cluster (own process)"
    )


@pytest.fixture(scope="session")
def ray_session() -> None:
    """Shadows the suite's single-node session Ray: nothing in tests/multinode may use it
    (nor the ``platform`` fixture of tests/conftest.py built on it)."""
    pytest.fail(
        "tests/multinode must not use the session Ray of tests/conftest.py (ray_session): "
        "its tests run on the multi-node `cluster` fixture in a pytest process of their own"
    )


class MultiNodeCluster:
    """The session's cluster: the head, plus worker nodes tests add and remove."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)

    def add_node(self, *, num_cpus: float = 1, num_gpus: float = 0, **kwargs: Any) -> Any:
        """A worker node (``num_gpus`` fake GPUs), alive and in the cluster's resources."""
        import ray

        node = self.cluster.add_node(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_memory=NODE_OBJECT_STORE,
            **kwargs,
        )
        wait_for(
            lambda: any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()),
            timeout=30,
            what=f"node {node.node_id} alive",
        )
        return node

    def remove_node(self, node: Any) -> None:
        import ray

        self.cluster.remove_node(node)
        wait_for(
            lambda: not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()),
            timeout=30,
            what=f"node {node.node_id} dead",
        )

    def alive_worker_ids(self) -> set[str]:
        import ray

        return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != self.head_id}


@pytest.fixture(scope="session")
def cluster() -> Iterator[MultiNodeCluster]:
    """The head node (no CPU, ``clara_head: 1``) with this process connected as driver."""
    import ray
    from ray.cluster_utils import Cluster

    from clara_ray.auth_token import ensure_local_token

    if ray.is_initialized():
        pytest.fail(
            "Ray is already initialised in this process, so it cannot connect to a multi-node "
            "cluster: run tests/multinode in a pytest process of its own "
            "(`python -m pytest tests/multinode`), and keep it out of the main suite's run"
        )
    ensure_local_token()  # in the test home, as `clara-ray up` does
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's session folders and its "current cluster" file in a folder of our own, not in
    # the machine's shared /tmp/ray (short: it holds the nodes' socket paths)
    ray_tmp = tempfile.mkdtemp(prefix="clara-mn-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_tmp
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "num_gpus": 0,
            "resources": {HEAD_RESOURCE: 1},
            "object_store_memory": NODE_OBJECT_STORE,
            "include_dashboard": False,
            "_system_config": HEAD_SYSTEM_CONFIG,
        },
    )
    try:
        ray.init(
            address=c.address,
            namespace="clara-multinode",
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            log_to_driver=False,
        )
        assert ray.get_runtime_context().get_node_id() == c.head_node.node_id
        yield MultiNodeCluster(c)
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
def nodes(cluster: MultiNodeCluster) -> Iterator[MultiNodeCluster]:
    """The cluster, its worker nodes added by the test removed afterwards (the head alone
    again for the next test)."""
    import ray

    yield cluster
    for node in list(cluster.cluster.worker_nodes):
        with contextlib.suppress(Exception):
            cluster.cluster.remove_node(node)
    wait_for(
        lambda: not cluster.alive_worker_ids() and not ray.cluster_resources().get("CPU"),
        timeout=30,
        what="worker nodes removed",
    )


def actor_info(name: str, namespace: str) -> dict[str, Any]:
    """The GCS's record of a named actor (node, state, restarts); no dashboard needed."""
    import ray
    from ray._private.state import actors

    handle = ray.get_actor(name, namespace=namespace)
    return dict(actors(actor_id=handle._actor_id.hex()))


PlatformFactory = Callable[..., Any]


@pytest.fixture
def platform_factory(nodes: MultiNodeCluster, tmp_path: Path) -> Iterator[PlatformFactory]:
    """``start(**env)``: a Core on the cluster, in a namespace of its own, with settings
    (``make_settings`` + ``ray.address`` = the cluster, ``env`` overrides) and a client.
    Its actors are killed afterwards.

    Tests add the nodes they start with first, then the Core, as a deployment does (the Core
    reads the cluster's capacity when it starts and on its reconcile tick)."""
    import ray

    from clara_ray.client import PlatformClient
    from clara_ray.platform import get_or_create_core

    namespaces: list[str] = []

    def start(**env: str) -> Any:
        settings = make_settings(tmp_path, CLARA_RAY_RAY__ADDRESS=nodes.address, **env)
        namespaces.append(settings.ray.namespace)
        core = get_or_create_core(settings)
        ray.get(core.ping.remote(), timeout=120)
        return PlatformClient.of_actor(settings, core)

    yield start
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] in namespaces:
            with contextlib.suppress(ValueError):  # it exited meanwhile
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


def operator(client: Any, job_id: str, name: str) -> dict[str, Any]:
    return next(
        o for o in client.core.describe_job(job_id, results=False)["operators"] if o["name"] == name
    )
