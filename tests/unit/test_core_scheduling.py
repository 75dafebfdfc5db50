"""The Core admits by resources, refuses what can never fit, and evicts for urgent jobs
(a Core without Ray: the launcher reports a cluster of 4 CPUs and 2 GPUs)."""

from __future__ import annotations

from textwrap import dedent

import pytest

from clara_ray.contracts.records import JobPriority, JobRecord, JobState, JobStatus
from clara_ray.contracts.resources import ClusterCapacity, Resources
from clara_ray.core import CoreService
from clara_ray.core.scheduler import AdmissionPolicy
from clara_ray.errors import UnschedulableError
from tests.unit.core_env import Env

CLUSTER = ClusterCapacity(Resources(cpu=4, gpu=2), (Resources(2, 1), Resources(2, 1)))


def gpu_pipeline(name: str, gpus: int, eviction: str = "requeue") -> str:
    return dedent(
        f"""
        api-version: 0.4.0
        name: {name}
        eviction: {eviction}
        operators:
          - name: first
            run: tests.ops:sleep
            input: [{{name: payload}}]
            output: [{{name: done}}]
            requests: {{cpu: 0.5, gpu: {gpus}}}
          - name: second
            run: tests.ops:sleep
            input: [{{from: first, name: done}}]
            requests: {{cpu: 0.5}}
        """
    )


@pytest.fixture
def evicted() -> list[tuple[str, str]]:
    """(job, by) of each eviction the Core reports to its observer."""
    return []


@pytest.fixture
def cluster_core(env: Env, evicted: list[tuple[str, str]]) -> CoreService:
    env.launcher.capacity = CLUSTER
    core = CoreService(
        env.stores[-1],
        env.storage,
        env.launcher,
        policy=AdmissionPolicy(max_jobs=10, evicting=(JobPriority.IMMEDIATE,)),
        clock=env.clock,
        on_evicted=lambda job, by: evicted.append((job.job_id, by.job_id)),
    )
    env.core = core
    core.recover()
    for name, gpus, eviction in (
        ("gpu-one", 1, "requeue"),
        ("gpu-two", 2, "requeue"),
        ("gpu-stop", 1, "stop"),
        ("gpu-four", 4, "requeue"),
    ):
        core.pipelines.create_pipeline(gpu_pipeline(name, gpus, eviction))
    return core


def start(core: CoreService, job_id: str, pipeline: str, priority: str = "normal") -> JobRecord:
    core.create_job(job_id, pipeline, "pay-1", priority=priority)
    core.start_job(job_id)
    assert core.wait_for_launches(timeout=10)
    return core.get_job(job_id)


def finish(core: CoreService, job_id: str) -> None:
    run = core.get_job(job_id).run
    for op in ("first", "second"):
        core.operator_started(
            job_id, op, started_at=1.0, node_id="n", node_ip="1.2.3.4", gpu_ids=[], run=run
        )
        core.operator_stopped(job_id, op, status="Healthy", ended_at=2.0, run=run)
    core.job_stopped(job_id, "Healthy", run=run)
    assert core.wait_for_launches(timeout=10)


def test_a_job_records_its_demand(cluster_core: CoreService) -> None:
    job = start(cluster_core, "j", "gpu-one")
    assert job.demand == {"cpu": 0.5, "gpu": 1.0, "memory": 0.0}
    assert job.run == 1


def test_a_job_that_can_never_fit_is_refused_with_the_numbers(cluster_core: CoreService) -> None:
    with pytest.raises(UnschedulableError) as refused:
        cluster_core.create_job("big", "gpu-four", "pay-1")
    message = str(refused.value)
    assert "pipeline 'gpu-four' cannot run on this cluster" in message
    assert "need gpu: 4 at once, the cluster has gpu: 2" in message
    assert cluster_core.store.get_job("big") is None
    with pytest.raises(UnschedulableError, match="operator 'first' needs gpu: 2 on one node"):
        cluster_core.create_job("wide", "gpu-two", "pay-1")  # 2 GPUs, but 1 per node


def test_a_two_gpu_job_waits_while_a_one_gpu_job_runs_then_starts(
    env: Env, cluster_core: CoreService
) -> None:
    env.launcher.capacity = ClusterCapacity(Resources(cpu=4, gpu=2), (Resources(4, 2),))
    cluster_core.recover()
    assert start(cluster_core, "one", "gpu-one").state is JobState.RUNNING
    assert start(cluster_core, "cpu", "gpu-one").state is JobState.RUNNING  # the second GPU
    finish(cluster_core, "cpu")
    wide = start(cluster_core, "wide", "gpu-two")
    assert wide.state is JobState.PENDING
    assert wide.reason == "waiting for resources: needs gpu: 2, gpu: 1 free"
    finish(cluster_core, "one")
    assert cluster_core.get_job("wide").state is JobState.RUNNING
    assert cluster_core.get_job("wide").reason is None


def test_immediate_job_evicts_the_youngest_lower_job_which_is_requeued_then_runs(
    env: Env, cluster_core: CoreService, evicted: list[tuple[str, str]]
) -> None:
    start(cluster_core, "old", "gpu-one", "lower")
    start(cluster_core, "young", "gpu-one", "lower")
    urgent = start(cluster_core, "urgent", "gpu-one", "immediate")
    assert urgent.state is JobState.RUNNING
    young = cluster_core.get_job("young")
    assert (young.state, young.status) == (JobState.PENDING, JobStatus.EVICTED)
    assert young.reason is not None and "evicted by job urgent (priority immediate)" in young.reason
    [eviction] = young.evictions
    assert (eviction["by"], eviction["priority"], eviction["run"], eviction["requeued"]) == (
        "urgent",
        "immediate",
        1,
        True,
    )
    assert cluster_core.get_job("old").state is JobState.RUNNING
    assert env.launcher.canceled == ["young"]
    assert evicted == [("young", "urgent")]
    described = cluster_core.describe_job("young")
    assert all((o["state"], o["attempts"]) == ("Pending", 0) for o in described["operators"])
    # the evicted run's late reports change nothing
    cluster_core.operator_stopped("young", "first", status="Canceled", ended_at=3.0, run=1)
    cluster_core.job_stopped("young", "Canceled", "canceled by request", run=1)
    assert cluster_core.get_job("young").state is JobState.PENDING
    kinds = [
        (e.subject, e.state, e.status)
        for e in cluster_core.events.list_events()
        if e.kind == "job" and e.job_id == "young"
    ]
    assert [(s, st) for _, s, st in kinds][-2:] == [("Running", "Healthy"), ("Pending", "Evicted")]
    finish(cluster_core, "urgent")
    again = cluster_core.get_job("young")
    assert (again.state, again.run) == (JobState.RUNNING, 2)
    assert env.launched().count("young") == 2
    finish(cluster_core, "young")
    done = cluster_core.get_job("young")
    assert (done.state, done.status) == (JobState.STOPPED, JobStatus.HEALTHY)
    assert len(done.evictions) == 1


def test_eviction_stop_ends_the_job_evicted(cluster_core: CoreService) -> None:
    start(cluster_core, "a", "gpu-stop", "lower")
    start(cluster_core, "b", "gpu-stop", "lower")
    start(cluster_core, "urgent", "gpu-one", "immediate")
    b = cluster_core.get_job("b")
    assert (b.state, b.status) == (JobState.STOPPED, JobStatus.EVICTED)
    assert b.reason is not None and b.reason.startswith("evicted by job urgent")
    assert {o["status"] for o in cluster_core.describe_job("b")["operators"]} == {"Evicted"}


def test_equal_priority_is_never_evicted(env: Env, cluster_core: CoreService) -> None:
    start(cluster_core, "i1", "gpu-one", "immediate")
    start(cluster_core, "i2", "gpu-one", "immediate")
    third = start(cluster_core, "i3", "gpu-one", "immediate")
    assert third.state is JobState.PENDING
    assert env.launcher.canceled == []
    normal = start(cluster_core, "n", "gpu-one", "higher")
    assert normal.state is JobState.PENDING and env.launcher.canceled == []


def test_unknown_cluster_admits_by_count(env: Env, core: CoreService) -> None:
    """Without a capacity (the launcher cannot tell), admission is by count alone."""
    env.launcher.capacity = None
    core.recover()
    core.create_job("j", "diamond", "pay-1")
    assert core.start_job("j").state is JobState.RUNNING


def test_a_refusal_is_decided_on_a_fresh_reading_of_the_cluster(
    env: Env, cluster_core: CoreService
) -> None:
    """A node that joined since the last reconcile tick counts: no stale refusal."""
    env.launcher.capacity = ClusterCapacity(Resources(cpu=0, gpu=2), (Resources(0, 2),))
    cluster_core.recover()
    env.launcher.capacity = CLUSTER  # a worker joined; the Core has not ticked since
    assert cluster_core.create_job("j", "gpu-one", "pay-1").job_id == "j"
