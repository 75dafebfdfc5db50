"""Admission by resources and priority eviction on a real local Ray (4 CPUs, 2 fake GPUs).

GPUs are the contended resource here: only these tests' operators ask for them, so what
the Core admits is what Ray can run.
"""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import pytest

from clara_ray.errors import UnschedulableError
from tests.conftest import wait_for

pytestmark = pytest.mark.ray


def gpu_sleeper(tmp_path: Path, name: str, gpus: int, seconds: float) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        dedent(
            f"""
            api-version: 0.4.0
            name: {name}
            operators:
              - name: work
                run: tests.ops:sleep
                args: {{seconds: {seconds}}}
                input: [{{name: payload}}]
                requests: {{cpu: 0.25, gpu: {gpus}}}
            """
        )
    )
    return str(path)


def work(platform, job_id: str) -> dict:
    return platform.core.describe_job(job_id, results=False)["operators"][0]


def running(platform, job_id: str) -> bool:
    return work(platform, job_id)["state"] == "Running"


def test_a_two_gpu_job_waits_while_a_one_gpu_job_runs_then_starts(platform, payload_dir, tmp_path):
    one = platform.create_job(gpu_sleeper(tmp_path, "one-gpu", 1, 4), str(payload_dir), start=True)
    wait_for(lambda: running(platform, one.job_id), what="the one-GPU job running")
    wide = platform.create_job(gpu_sleeper(tmp_path, "two-gpu", 2, 0), str(payload_dir), start=True)
    waiting = platform.core.get_job(wide.job_id)
    assert str(waiting.state) == "Pending"
    assert waiting.reason == "waiting for resources: needs gpu: 2, gpu: 1 free"
    first = platform.wait_job(one.job_id, timeout=60)
    second = platform.wait_job(wide.job_id, timeout=60)
    assert first["status"] == second["status"] == "Healthy"
    assert second["started_at"] >= first["ended_at"]
    assert sorted(second["operators"][0]["gpu_ids"]) == [0, 1]


def test_a_job_that_can_never_fit_is_refused_at_create(platform, payload_dir, tmp_path):
    with pytest.raises(UnschedulableError, match="need gpu: 3 at once, the cluster has gpu: 2"):
        platform.create_job(gpu_sleeper(tmp_path, "three-gpu", 3, 0), str(payload_dir))
    assert platform.core.list_jobs() == []


def test_an_immediate_job_evicts_a_lower_job_which_is_requeued_and_ends_healthy(
    platform, payload_dir, tmp_path
):
    lower = gpu_sleeper(tmp_path, "research", 1, 6)
    old = platform.create_job(lower, str(payload_dir), priority="lower", start=True)
    young = platform.create_job(lower, str(payload_dir), priority="lower", start=True)
    for job in (old, young):
        wait_for(lambda job=job: running(platform, job.job_id), what="the lower jobs running")
    asked = time.monotonic()
    urgent = platform.create_job(
        gpu_sleeper(tmp_path, "stroke", 1, 1), str(payload_dir), priority="immediate", start=True
    )
    wait_for(lambda: running(platform, urgent.job_id), timeout=20, what="the urgent job running")
    waited = time.monotonic() - asked
    evicted = platform.core.get_job(young.job_id)
    assert str(evicted.status) == "Evicted"
    assert [e["by"] for e in evicted.evictions] == [urgent.job_id]
    assert platform.core.get_job(old.job_id).evictions == []
    done = {j.job_id: platform.wait_job(j.job_id, timeout=90) for j in (old, young, urgent)}
    assert {d["status"] for d in done.values()} == {"Healthy"}, done
    assert done[young.job_id]["run"] == 2 and done[old.job_id]["run"] == 1
    assert done[young.job_id]["started_at"] >= done[urgent.job_id]["started_at"]
    changes = [
        (e.state, e.status)
        for e in platform.core.list_events()
        if e.kind == "job" and e.job_id == young.job_id
    ]
    assert ("Pending", "Evicted") in changes and changes[-1] == ("Stopped", "Healthy")
    assert waited < 15, f"the immediate job waited {waited:.1f} s"


def test_equal_priority_is_never_evicted(platform, payload_dir, tmp_path):
    urgent = gpu_sleeper(tmp_path, "urgent", 1, 3)
    first = [
        platform.create_job(urgent, str(payload_dir), priority="immediate", start=True)
        for _ in range(2)
    ]
    for job in first:
        wait_for(lambda job=job: running(platform, job.job_id), what="two immediate jobs running")
    third = platform.create_job(urgent, str(payload_dir), priority="immediate", start=True)
    assert str(platform.core.get_job(third.job_id).state) == "Pending"
    done = [platform.wait_job(j.job_id, timeout=60) for j in (*first, third)]
    assert [d["status"] for d in done] == ["Healthy"] * 3
    assert all(d["evictions"] == [] and d["run"] == 1 for d in done)
    assert done[2]["started_at"] >= min(d["ended_at"] for d in done[:2])
