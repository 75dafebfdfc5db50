"""Scheduling against a cluster whose nodes come and go: an operator no node can run any
more faults its job after ``scheduling.unschedulable_timeout``; a node that joins while
jobs queue gets work."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import pytest

from tests.conftest import wait_for
from tests.multinode.conftest import operator

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(150)]

UNSCHEDULABLE_TIMEOUT = 3.0
SLACK_S = 6.0  # placement is checked every 2 s: up to 2 s to notice, 2 s to act


def pipeline_file(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def scheduling_platform(platform_factory):
    """A Core whose operators may wait UNSCHEDULABLE_TIMEOUT s for a node that can run them."""
    client = platform_factory(
        CLARA_RAY_SCHEDULING__UNSCHEDULABLE_TIMEOUT=str(UNSCHEDULABLE_TIMEOUT)
    )
    assert client.settings.scheduling.unschedulable_timeout == UNSCHEDULABLE_TIMEOUT
    return client


BEFORE_IT_RUNS = """
    api-version: 0.4.0
    name: mn-gpu-lost-before
    operators:
      - name: prepare
        run: tests.multinode.ops:make
        args: {seconds: 3}
        input: [{name: payload}]
        output: [{name: volume}]
        requests: {cpu: 2}          # only the CPU node has 2 CPUs: never on the GPU node
      - name: infer
        run: tests.multinode.ops:where
        input: [{from: prepare, name: volume}]
        requests: {gpu: 1}
    """

WHILE_IT_RUNS = """
    api-version: 0.4.0
    name: mn-gpu-lost-mid-run
    operators:
      - name: infer
        run: tests.multinode.ops:where
        args: {seconds: 30}
        input: [{name: payload}]
        requests: {gpu: 1}
        retries: 2                  # the retry after the node's loss has nowhere to go
    """


@pytest.mark.parametrize("when", ["before-it-runs", "while-it-runs"])
def test_gpu_operator_whose_only_gpu_node_is_lost_faults_the_job(
    when, nodes, platform_factory, payload_dir, tmp_path
):
    if when == "before-it-runs":
        nodes.add_node(num_cpus=2)  # for `prepare`
    gpu_node = nodes.add_node(num_cpus=1, num_gpus=1)
    client = scheduling_platform(platform_factory)
    text = BEFORE_IT_RUNS if when == "before-it-runs" else WHILE_IT_RUNS
    watched = "prepare" if when == "before-it-runs" else "infer"
    job = client.create_job(str(pipeline_file(tmp_path, text)), str(payload_dir), start=True)
    running = wait_for(
        lambda: (op := operator(client, job.job_id, watched))["state"] == "Running" and op,
        timeout=60,
        what=f"operator {watched} running",
    )
    if when == "while-it-runs":
        assert running["node_id"] == gpu_node.node_id
    nodes.remove_node(gpu_node)
    removed_at = time.time()
    described = client.wait_job(
        job.job_id, timeout=3 + UNSCHEDULABLE_TIMEOUT + SLACK_S + 30, poll=0.2
    )
    assert (described["state"], described["status"]) == ("Stopped", "Faulted"), described
    reason = described["reason"] or ""
    assert "infer" in reason and "gpu" in reason.lower(), reason
    ops = {o["name"]: o for o in described["operators"]}
    assert ops["infer"]["state"] == "Stopped" and ops["infer"]["status"] != "Healthy", ops
    if when == "before-it-runs":
        assert ops["prepare"]["status"] == "Healthy", ops
        assert ops["infer"]["attempts"] == 0, ops
    else:
        assert ops["infer"]["attempts"] == 1, ops
    # the operator had no node from the removal on (waiting for its input counts too):
    # faulted not before the timeout, and not much after it
    waited = described["ended_at"] - removed_at
    assert UNSCHEDULABLE_TIMEOUT - 0.5 <= waited <= UNSCHEDULABLE_TIMEOUT + SLACK_S, (
        waited,
        reason,
    )


def test_node_added_while_jobs_queue_gets_work(nodes, platform_factory, payload_dir, tmp_path):
    first = nodes.add_node(num_cpus=1)
    client = scheduling_platform(platform_factory)
    path = pipeline_file(
        tmp_path,
        """
        api-version: 0.4.0
        name: mn-queue
        operators:
          - name: only
            run: tests.multinode.ops:where
            args: {seconds: 5}          # longer than the Core's 5 s reconcile tick
            input: [{name: payload}]
            requests: {cpu: 1}
        """,
    )
    jobs = [client.create_job(str(path), str(payload_dir), start=True) for _ in range(3)]
    wait_for(
        lambda: any(operator(client, j.job_id, "only")["state"] == "Running" for j in jobs),
        timeout=60,
        what="the first job's operator running",
    )
    # premise: the others queue (one CPU, each job needs one)
    queued = [
        client.core.get_job(j.job_id)
        for j in jobs
        if operator(client, j.job_id, "only")["attempts"] == 0
    ]
    assert len(queued) == 2, [operator(client, j.job_id, "only") for j in jobs]
    states_while_queued = sorted(str(j.state) for j in queued)
    added = nodes.add_node(num_cpus=1)
    added_at = time.time()
    ended = [client.wait_job(j.job_id, timeout=60, poll=0.2) for j in jobs]
    assert [(d["state"], d["status"]) for d in ended] == [("Stopped", "Healthy")] * 3, ended
    where = [d["operators"][0]["node_id"] for d in ended]
    assert added.node_id in where, (where, first.node_id, added.node_id)
    assert set(where) <= {first.node_id, added.node_id}
    # it got work while the queue was still there: it ran a job next to one on the first
    # node (one node alone runs them one after the other, 3 x 5 s)
    spans = {
        node: [
            (d["operators"][0]["started_at"], d["operators"][0]["ended_at"])
            for d in ended
            if d["operators"][0]["node_id"] == node
        ]
        for node in (first.node_id, added.node_id)
    }
    assert any(
        a0 < b1 and b0 < a1 for a0, a1 in spans[added.node_id] for b0, b1 in spans[first.node_id]
    ), (spans, added_at)
    # admission (scheduling interface): with one 1-CPU node, only one 1-CPU job is admitted
    assert states_while_queued == ["Pending", "Pending"], states_while_queued


def test_job_created_just_after_a_node_joins_is_not_refused(
    nodes, platform_factory, payload_dir, tmp_path
):
    """The Core starts before its first worker joins (a KubeRay head, `clara-ray up`); a
    job created as soon as the node is there fits it and must not be refused."""
    client = scheduling_platform(platform_factory)
    nodes.add_node(num_cpus=1)
    path = pipeline_file(
        tmp_path,
        """
        api-version: 0.4.0
        name: mn-first-node
        operators:
          - name: only
            run: tests.multinode.ops:where
            input: [{name: payload}]
            requests: {cpu: 1}
        """,
    )
    job = client.create_job(str(path), str(payload_dir), start=True)
    described = client.wait_job(job.job_id, timeout=60, poll=0.2)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
