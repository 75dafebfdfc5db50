"""Plain scheduling code: a pipeline's peak demand, refusals, and admission plans."""

from __future__ import annotations

import itertools

import pytest

from clara_ray.contracts.records import JobPriority
from clara_ray.contracts.resources import ClusterCapacity, Resources
from clara_ray.pipeline import load_pipeline, resolve_pipeline
from clara_ray.scheduling import (
    OperatorDemand,
    QueuedJob,
    RunningJob,
    peak_demand,
    pipeline_demand,
    plan_admission,
    refusal,
)
from tests.conftest import ROOT

LOWER, NORMAL, HIGHER, IMMEDIATE = (
    JobPriority.LOWER,
    JobPriority.NORMAL,
    JobPriority.HIGHER,
    JobPriority.IMMEDIATE,
)


def op(name: str, *upstream: str, cpu: float = 0, gpu: float = 0, memory: float = 0):
    return OperatorDemand(name, upstream, Resources(cpu, gpu, memory))


def brute_force_peak(ops: list[OperatorDemand]) -> Resources:
    """Every set of operators none of which depends on another, summed: the definition."""
    below: dict[str, set[str]] = {}
    for o in ops:  # in dependency order
        below[o.name] = set(o.upstream).union(*(below[u] for u in o.upstream))
    best = {"cpu": 0.0, "gpu": 0.0, "memory": 0.0}
    for size in range(1, len(ops) + 1):
        for group in itertools.combinations(ops, size):
            names = {g.name for g in group}
            if any(below[g.name] & names for g in group):
                continue
            for d in best:
                best[d] = max(best[d], sum(getattr(g.request, d) for g in group))
    return Resources(**best)


def test_chain_needs_its_widest_operator_not_the_sum() -> None:
    ops = [op("a", cpu=1), op("b", "a", cpu=2, gpu=1), op("c", "b", cpu=1)]
    assert peak_demand(ops) == Resources(cpu=2, gpu=1)


def test_parallel_branches_add_up() -> None:
    ops = [op("a", cpu=1), op("b", "a", gpu=1), op("c", "a", gpu=1), op("d", "b", "c", cpu=3)]
    assert peak_demand(ops) == Resources(cpu=3, gpu=2)


def test_a_long_branch_overlaps_the_whole_other_branch() -> None:
    # x1 -> x2 -> x3 runs while y runs: y overlaps each of them, not only its level-mate
    ops = [op("x1", cpu=1), op("x2", "x1", cpu=1), op("x3", "x2", cpu=4), op("y", cpu=2)]
    assert peak_demand(ops).cpu == 6


def test_peak_demand_matches_the_definition_on_random_dags() -> None:
    import random

    rng = random.Random(7)
    for _ in range(40):
        ops: list[OperatorDemand] = []
        for i in range(rng.randint(1, 8)):
            upstream = tuple(o.name for o in ops if rng.random() < 0.3)
            ops.append(
                op(f"o{i}", *upstream, cpu=rng.choice([0, 0.25, 1, 2]), gpu=rng.choice([0, 1]))
            )
        assert peak_demand(ops) == brute_force_peak(ops)


def test_ct_lung_bone_fits_one_cpu() -> None:
    plan = resolve_pipeline(load_pipeline(ROOT / "pipelines" / "ct-lung-bone.yaml"), {})
    demand, requests = pipeline_demand(plan)
    assert demand.cpu == 1 and demand.gpu == 0
    assert demand.memory == 2 * 2**30
    assert set(requests) == {o.name for o in plan.operators}


def test_refusal_names_the_numbers() -> None:
    cluster = ClusterCapacity(Resources(cpu=8, gpu=1), (Resources(4, 1), Resources(4, 0)))
    why = refusal(Resources(cpu=1, gpu=2), {"a": Resources(1, 1), "b": Resources(0, 1)}, cluster)
    assert why == "its operators need gpu: 2 at once, the cluster has gpu: 1"
    why = refusal(Resources(cpu=6), {"big": Resources(cpu=6)}, cluster)
    assert why is not None
    assert "operator 'big' needs cpu: 6 on one node" in why and "cpu: 4" in why
    assert refusal(Resources(cpu=4, gpu=1), {"a": Resources(4, 1)}, cluster) is None
    # a configured capacity (an autoscaling cluster) has no node shapes to check
    grown = ClusterCapacity(Resources(cpu=64, gpu=8))
    assert refusal(Resources(cpu=6), {"big": Resources(cpu=6)}, grown) is None


CLUSTER = Resources(cpu=4, gpu=2)


def queued(job_id: str, priority: JobPriority = NORMAL, at: float = 0.0, **need: float):
    return QueuedJob(job_id, priority, Resources(**need), at)


def running(job_id: str, priority: JobPriority = NORMAL, started: float = 0.0, **held: float):
    return RunningJob(job_id, priority, Resources(**held), started)


def plan(queue, run, capacity=CLUSTER, max_jobs=10, evicting=(IMMEDIATE,), now=100.0):
    return plan_admission(
        queue,
        run,
        capacity=capacity,
        max_jobs=max_jobs,
        evicting=evicting,
        now=now,
        min_run_before_reeviction=60.0,
    )


def test_admits_what_fits_in_priority_then_arrival_order() -> None:
    p = plan(
        [
            queued("late", at=2, cpu=2),
            queued("early", at=1, cpu=2),
            queued("hi", HIGHER, at=3, cpu=2),
        ],
        [],
    )
    assert p.admit == ["hi", "early"]
    assert p.waiting == {"late": "waiting for resources: needs cpu: 2, cpu: 0 free"}


def test_a_two_gpu_job_waits_while_a_one_gpu_job_runs() -> None:
    p = plan([queued("wide", gpu=2, cpu=1)], [running("one", gpu=1, cpu=1)])
    assert p.admit == [] and p.evict == []
    assert p.waiting["wide"] == "waiting for resources: needs gpu: 2, gpu: 1 free"
    assert plan([queued("wide", gpu=2, cpu=1)], []).admit == ["wide"]


def test_narrow_jobs_pass_a_waiting_job_only_without_taking_what_it_waits_for() -> None:
    p = plan(
        [
            queued("wide", at=1, gpu=2),
            queued("cpu-only", at=2, cpu=1),
            queued("gpu-one", at=3, gpu=1),
        ],
        [running("one", gpu=1)],
    )
    assert p.admit == ["cpu-only"]
    assert p.waiting["gpu-one"] == "waiting behind job wide for gpu"


def test_a_job_larger_than_the_cluster_waits_without_holding_others_back() -> None:
    p = plan([queued("huge", at=1, gpu=3), queued("small", at=2, gpu=1)], [])
    assert p.admit == ["small"]
    assert (
        p.waiting["huge"] == "waiting for the cluster to grow: needs gpu: 3, the cluster has gpu: 2"
    )


def test_max_jobs_bounds_the_count_but_not_immediate_jobs() -> None:
    p = plan(
        [queued("a", cpu=0.5), queued("b", cpu=0.5), queued("now", IMMEDIATE, cpu=0.5)],
        [],
        max_jobs=1,
    )
    assert p.admit == ["now"]  # taken first, and it counts: the one slot is gone
    assert "core.max_concurrent_jobs" in p.waiting["a"]
    p = plan([queued("a", cpu=0.5), queued("now", IMMEDIATE, cpu=0.5)], [running("r")], max_jobs=1)
    assert p.admit == ["now"]  # beyond the bound


def test_unknown_capacity_admits_by_count_only() -> None:
    p = plan([queued("a", gpu=9), queued("b", gpu=9)], [running("r")], capacity=None, max_jobs=2)
    assert p.admit == ["a"] and "b" in p.waiting


def test_immediate_evicts_the_lowest_then_youngest_and_no_more_than_needed() -> None:
    run = [
        running("normal-old", NORMAL, started=1, gpu=1),
        running("lower-old", LOWER, started=2, gpu=1),
        running("lower-young", LOWER, started=3, gpu=1),
        running("cpu-lower", LOWER, started=4, cpu=1),
    ]
    p = plan([queued("urgent", IMMEDIATE, gpu=1)], run, capacity=Resources(cpu=4, gpu=3))
    assert [(e.victim, e.by) for e in p.evict] == [("lower-young", "urgent")]
    assert p.admit == ["urgent"]
    assert p.evict[0].reason == "evicted by job urgent (priority immediate) to free gpu: 1"
    p = plan([queued("urgent", IMMEDIATE, gpu=2)], run, capacity=Resources(cpu=4, gpu=3))
    assert {e.victim for e in p.evict} == {"lower-young", "lower-old"}


def test_surplus_victims_are_spared() -> None:
    # the youngest lower job frees too little alone; the next one alone is enough
    run = [running("big", LOWER, started=1, gpu=2), running("small", LOWER, started=2, gpu=1)]
    p = plan([queued("urgent", IMMEDIATE, gpu=2)], run, capacity=Resources(cpu=4, gpu=3))
    assert [e.victim for e in p.evict] == ["big"]


def test_equal_or_higher_priority_is_never_evicted() -> None:
    run = [running("i1", IMMEDIATE, gpu=1), running("i2", IMMEDIATE, gpu=1)]
    p = plan([queued("i3", IMMEDIATE, gpu=1)], run)
    assert p.evict == [] and p.admit == []
    run = [running("h", HIGHER, gpu=1), running("l", LOWER, gpu=1)]
    p = plan([queued("h2", HIGHER, gpu=2)], run, evicting=(IMMEDIATE, HIGHER))
    assert p.evict == [] and p.admit == []  # evicting l alone is not enough: nobody goes


def test_only_the_configured_priorities_evict() -> None:
    run = [running("l", LOWER, gpu=2)]
    assert plan([queued("h", HIGHER, gpu=1)], run).evict == []
    assert [
        e.victim
        for e in plan([queued("h", HIGHER, gpu=1)], run, evicting=(IMMEDIATE, HIGHER)).evict
    ] == ["l"]
    assert plan([queued("i", IMMEDIATE, gpu=1)], run, evicting=()).evict == []


def test_a_requeued_job_is_not_evicted_again_by_the_same_job_before_its_minimum_run() -> None:
    again = RunningJob("l", LOWER, Resources(gpu=2), started_at=90.0, yielded_to=frozenset({"i"}))
    assert plan([queued("i", IMMEDIATE, gpu=1)], [again], now=100.0).evict == []
    assert [
        e.victim for e in plan([queued("other", IMMEDIATE, gpu=1)], [again], now=100.0).evict
    ] == ["l"]
    assert [e.victim for e in plan([queued("i", IMMEDIATE, gpu=1)], [again], now=151.0).evict] == [
        "l"
    ]


@pytest.mark.parametrize("slots", [1, 2])
def test_eviction_frees_a_slot_for_an_evicting_higher_job(slots: int) -> None:
    run = [running(f"l{i}", LOWER, started=i, cpu=0.1) for i in range(slots)]
    p = plan([queued("h", HIGHER, cpu=0.1)], run, max_jobs=slots, evicting=(IMMEDIATE, HIGHER))
    assert [e.victim for e in p.evict] == [f"l{slots - 1}"] and p.admit == ["h"]
