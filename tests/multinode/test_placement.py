"""Where the platform runs things on a multi-node cluster: GPU stages on GPU nodes, platform
actors on the head, operators moving off a node that dies, the Core restarting on the head."""

from __future__ import annotations

import json
import time
from pathlib import Path
from textwrap import dedent

import pytest
import ray

from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.runner.job_runner import RUNNER_HOST_NAME
from tests.conftest import wait_for
from tests.multinode.conftest import actor_info, operator

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(150)]


def pipeline_file(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def records(folder: Path, op: str) -> list[dict]:
    """What the operator's attempts saw (node, GPUs), oldest first."""
    found = [json.loads(p.read_text()) for p in folder.glob(f"{op}-*.json")]
    return sorted(found, key=lambda r: r["at"])


def test_gpu_stage_lands_on_the_gpu_node_and_platform_actors_on_the_head(
    nodes, platform_factory, payload_dir, tmp_path
):
    cpu_node = nodes.add_node(num_cpus=1)
    gpu_node = nodes.add_node(num_cpus=1, num_gpus=1)
    platform = platform_factory()
    seen = tmp_path / "seen"
    path = pipeline_file(
        tmp_path,
        f"""
        api-version: 0.4.0
        name: mn-gpu
        operators:
          - name: prepare
            run: tests.multinode.ops:make
            args: {{record: '{seen}'}}
            input: [{{name: payload}}]
            output: [{{name: volume}}]
          - name: infer
            run: tests.multinode.ops:where
            args: {{record: '{seen}'}}
            input: [{{from: prepare, name: volume}}]
            requests: {{gpu: 1}}
        """,
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=90, poll=0.2)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    assert described["warnings"] == []  # the cluster has a GPU: no CPU fallback
    ops = {o["name"]: o for o in described["operators"]}
    assert ops["infer"]["node_id"] == gpu_node.node_id, (ops, gpu_node.node_id)
    assert ops["infer"]["gpu_ids"] == [0]
    assert ops["prepare"]["gpu_ids"] == []
    assert ops["prepare"]["node_id"] in {cpu_node.node_id, gpu_node.node_id}
    # what the GPU task saw itself agrees with the Core's record
    (infer_seen,) = records(seen, "infer")
    assert infer_seen["node_id"] == gpu_node.node_id
    assert infer_seen["gpu_ids"] == [0] and infer_seen["ctx_gpu_ids"] == [0]
    assert infer_seen["cuda"] == "0"
    # the platform's actors live on the head node, next to the state database
    ns = platform.settings.ray.namespace
    for name in (CORE_ACTOR_NAME, RUNNER_HOST_NAME):
        info = actor_info(name, ns)
        assert info["Address"]["NodeID"] == nodes.head_id, (name, info["Address"], nodes.head_id)


def test_worker_node_removed_mid_operator_moves_it_to_another_node(
    nodes, platform_factory, payload_dir, tmp_path
):
    by_id = {n.node_id: n for n in (nodes.add_node(num_cpus=1), nodes.add_node(num_cpus=1))}
    platform = platform_factory()
    seen = tmp_path / "seen"
    path = pipeline_file(
        tmp_path,
        f"""
        api-version: 0.4.0
        name: mn-move
        operators:
          - name: only
            run: tests.multinode.ops:where
            args: {{seconds: 8, record: '{seen}'}}
            input: [{{name: payload}}]
            retries: 2
        """,
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    first = wait_for(
        lambda: (
            (op := operator(platform, job.job_id, "only"))["state"] == "Running"
            and op["node_id"]
            and op
        ),
        timeout=60,
        what="operator running on a node",
    )
    doomed = first["node_id"]
    assert doomed in by_id, (doomed, list(by_id))
    (other,) = set(by_id) - {doomed}
    nodes.remove_node(by_id[doomed])
    described = platform.wait_job(job.job_id, timeout=90, poll=0.2)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    (op,) = described["operators"]
    assert op["attempts"] >= 2, op
    assert op["node_id"] == other, (op, doomed, other)
    attempts = records(seen, "only")
    assert len(attempts) >= 2 and attempts[0]["node_id"] == doomed, attempts
    assert attempts[-1]["node_id"] == other


def test_core_restarts_on_the_head_with_its_state_and_runs_new_jobs(
    nodes, platform_factory, payload_dir, tmp_path
):
    nodes.add_node(num_cpus=1)
    platform = platform_factory()
    quick = pipeline_file(
        tmp_path,
        """
        api-version: 0.4.0
        name: mn-quick
        operators:
          - name: only
            run: tests.multinode.ops:where
            input: [{name: payload}]
        """,
        "quick.yaml",
    )
    slow = pipeline_file(
        tmp_path,
        """
        api-version: 0.4.0
        name: mn-slow
        operators:
          - name: only
            run: tests.multinode.ops:where
            args: {seconds: 4}
            input: [{name: payload}]
        """,
        "slow.yaml",
    )
    done = platform.create_job(str(quick), str(payload_dir), metadata={"ward": "icu"}, start=True)
    assert platform.wait_job(done.job_id, timeout=60, poll=0.2)["status"] == "Healthy"
    running = platform.create_job(str(slow), str(payload_dir), start=True)
    wait_for(
        lambda: operator(platform, running.job_id, "only")["state"] == "Running",
        timeout=60,
        what="the slow job's operator running",
    )
    ns = platform.settings.ray.namespace
    before = platform.core.describe_job(done.job_id, results=False)
    pipelines_before = sorted(p.name for p in platform.core.list_pipelines())
    core_before = actor_info(CORE_ACTOR_NAME, ns)
    assert core_before["Address"]["NodeID"] == nodes.head_id

    ray.kill(ray.get_actor(CORE_ACTOR_NAME, namespace=ns), no_restart=False)
    killed_at = time.monotonic()
    restarted = wait_for(
        lambda: (
            (info := actor_info(CORE_ACTOR_NAME, ns))["NumRestarts"] > core_before["NumRestarts"]
            and info["State"] == "ALIVE"
            and info
        ),
        timeout=60,
        what="the Core restarted",
    )
    assert restarted["Address"]["NodeID"] == nodes.head_id, restarted["Address"]
    assert restarted["Pid"] != core_before["Pid"]
    ray.get(ray.get_actor(CORE_ACTOR_NAME, namespace=ns).ping.remote(), timeout=60)
    restart_s = time.monotonic() - killed_at

    assert platform.core.describe_job(done.job_id, results=False) == before
    assert sorted(p.name for p in platform.core.list_pipelines()) == pipelines_before
    ended = platform.wait_job(running.job_id, timeout=60, poll=0.2)
    assert (ended["state"], ended["status"]) == ("Stopped", "Healthy"), ended
    after = platform.create_job(str(quick), str(payload_dir), start=True)
    assert platform.wait_job(after.job_id, timeout=60, poll=0.2)["status"] == "Healthy"
    assert [j.job_id for j in platform.core.list_jobs()] == [
        done.job_id,
        running.job_id,
        after.job_id,
    ]
    assert restart_s < 60
