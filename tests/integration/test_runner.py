"""The job runner on a real local Ray: scheduling, object passing, failures, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
import ray

from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.runner.job_runner import RUNNER_HOST_NAME
from tests.conftest import PIPELINES, ROOT, wait_for

pytestmark = pytest.mark.ray


def pipeline_file(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def one_operator(name: str, run: str, *, args: str = "{}", extra: str = "") -> str:
    return f"""
    api-version: 0.4.0
    name: {name}
    operators:
      - name: only
        run: {run}
        args: {args}
        input: [{{name: payload}}]
        {extra}
    """


def operator(platform, job_id: str, name: str) -> dict:
    return next(o for o in platform.core.describe_job(job_id)["operators"] if o["name"] == name)


def test_diamond_runs_branches_and_passes_volumes_zero_copy(platform, payload_dir, tmp_path):
    job = platform.create_job(str(PIPELINES / "diamond.yaml"), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=120)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    ops = {o["name"]: o for o in described["operators"]}
    assert set(ops) == {"source", "left", "right", "join"}
    for op in ops.values():
        assert op["status"] == "Healthy" and op["node_id"] and op["attempts"] == 1
        assert op["started_at"] <= op["ended_at"]
    assert ops["source"]["ended_at"] <= ops["left"]["started_at"]
    assert max(ops["left"]["ended_at"], ops["right"]["ended_at"]) <= ops["join"]["started_at"]
    files = platform.download(job.job_id, "join", tmp_path / "out")
    assert [f.path for f in files] == ["combined.json"]
    combined = json.loads((tmp_path / "out" / "combined.json").read_text())
    n = 8 * 16 * 16
    ramp_sum = n * (n - 1) // 2
    assert combined["total"] == 2 * ramp_sum + n * 2 + n * 10
    assert combined["zero_copy"] == [True, True]  # read-only arrays straight from the object store
    logs = platform.logs(job.job_id, "source")
    assert "making a volume of shape (8, 16, 16) from 2 payload files" in logs["source"]


def test_parameter_override_changes_args(platform, payload_dir, tmp_path):
    job = platform.create_job(
        str(PIPELINES / "diamond.yaml"), str(payload_dir), parameters={"amount": "5"}, start=True
    )
    assert platform.wait_job(job.job_id, timeout=120)["status"] == "Healthy"
    platform.download(job.job_id, None, tmp_path / "out")
    total = json.loads((tmp_path / "out" / "join" / "combined.json").read_text())["total"]
    n = 8 * 16 * 16
    assert total == n * (n - 1) + n * 5 + n * 10


def test_fractional_gpu_request_gets_a_gpu_id(platform, payload_dir, tmp_path):
    path = pipeline_file(
        tmp_path,
        """
    api-version: 0.4.0
    name: gpu-half
    operators:
      - name: first
        run: tests.ops:whoami
        input: [{name: payload}]
        requests: {gpu: 0.5}
      - name: second
        run: tests.ops:whoami
        input: [{name: payload}]
        requests: {gpu: 0.5}
    """,
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=120)
    assert described["status"] == "Healthy", described
    assert described["warnings"] == []
    for op in described["operators"]:
        assert len(op["gpu_ids"]) == 1 and op["gpu_ids"][0] in (0, 1), op
        platform.download(job.job_id, op["name"], tmp_path / op["name"])
        seen = json.loads((tmp_path / op["name"] / "gpus.json").read_text())
        assert seen["gpu_ids"] == op["gpu_ids"]
        assert seen["cuda"] == str(op["gpu_ids"][0])


CPU_FALLBACK_SCRIPT = """
import json, sys, ray
from clara_ray.config.settings import load_settings
from clara_ray.client import PlatformClient
from clara_ray.platform import get_or_create_core
data, pipeline, payload = sys.argv[1:4]
ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
         runtime_env={"env_vars": {"PYTHONPATH": sys.argv[4]}}, log_to_driver=False)
settings = load_settings(env={"CLARA_RAY_DATA_DIR": data, "CLARA_RAY_SERVE__ENABLED": "false"})
client = PlatformClient.of_actor(settings, get_or_create_core(settings))
job = client.create_job(pipeline, payload, start=True)
print(json.dumps(client.wait_job(job.job_id, timeout=120)))
"""


@pytest.mark.slow
def test_gpu_operator_falls_back_to_cpu_without_gpus(payload_dir, tmp_path):
    """A separate Ray instance with no GPU resource: the GPU operator runs, with one warning."""
    path = pipeline_file(
        tmp_path, one_operator("gpu-one", "tests.ops:whoami", extra="requests: {gpu: 1}")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CPU_FALLBACK_SCRIPT,
            str(tmp_path / "data"),
            str(path),
            str(payload_dir),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    described = json.loads(proc.stdout.strip().splitlines()[-1])
    assert described["status"] == "Healthy"
    assert len(described["warnings"]) == 1
    assert (
        "requests 1 GPU but the cluster has no GPU resource; running it on CPU"
        in described["warnings"][0]
    )
    assert described["operators"][0]["gpu_ids"] == []


def test_worker_killed_mid_operator_is_retried(platform, payload_dir, tmp_path):
    marker = tmp_path / "pid"
    path = pipeline_file(
        tmp_path,
        one_operator(
            "crashy", "tests.ops:crash_once", args=f"{{marker: '{marker}'}}", extra="retries: 2"
        ),
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="operator pid"))
    # the first attempt's start is recorded before the kill, so the retry is counted as such
    wait_for(lambda: operator(platform, job.job_id, "only")["attempts"] == 1, what="attempt 1")
    os.kill(pid, signal.SIGKILL)
    described = platform.wait_job(job.job_id, timeout=120)
    assert described["status"] == "Healthy", described
    op = described["operators"][0]
    assert op["attempts"] == 2
    platform.download(job.job_id, "only", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "attempt.json").read_text())["pid"] != pid


def test_worker_killed_without_retries_faults_the_job(platform, payload_dir, tmp_path):
    marker = tmp_path / "pid"
    path = pipeline_file(
        tmp_path,
        one_operator("crashy-no-retry", "tests.ops:crash_once", args=f"{{marker: '{marker}'}}"),
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    os.kill(
        int(wait_for(lambda: marker.exists() and marker.read_text(), what="pid")), signal.SIGKILL
    )
    described = platform.wait_job(job.job_id, timeout=120)
    assert described["status"] == "Faulted"
    assert "operator 'only' failed" in described["reason"]
    assert "WorkerCrashedError" in described["reason"] or "died" in described["reason"]


def test_core_killed_mid_job_keeps_state_and_job_completes(platform, payload_dir, tmp_path):
    path = pipeline_file(tmp_path, one_operator("sleepy", "tests.ops:sleep", args="{seconds: 4}"))
    job = platform.create_job(str(path), str(payload_dir), metadata={"ward": "icu"}, start=True)
    wait_for(
        lambda: operator(platform, job.job_id, "only")["state"] == "Running",
        what="operator running",
    )
    before = platform.core.list_pipelines()
    ray.kill(
        ray.get_actor(CORE_ACTOR_NAME, namespace=platform.settings.ray.namespace), no_restart=False
    )
    described = platform.wait_job(job.job_id, timeout=120)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    assert described["metadata"] == {"ward": "icu"}
    assert described["operators"][0]["status"] == "Healthy"
    assert [p.name for p in platform.core.list_pipelines()] == [p.name for p in before]
    assert [j.job_id for j in platform.core.list_jobs()] == [job.job_id]


def test_runner_host_killed_mid_job_faults_it_with_the_reason_and_serves_on(
    platform, payload_dir, tmp_path
):
    path = pipeline_file(tmp_path, one_operator("sleepy", "tests.ops:sleep", args="{seconds: 30}"))
    job = platform.create_job(str(path), str(payload_dir), start=True)
    wait_for(
        lambda: operator(platform, job.job_id, "only")["state"] == "Running",
        what="operator running",
    )
    host = ray.get_actor(RUNNER_HOST_NAME, namespace=platform.settings.ray.namespace)
    assert ray.get(host.jobs.remote()) == [job.job_id]
    ray.kill(host, no_restart=False)
    described = platform.wait_job(job.job_id, timeout=120)
    assert (described["state"], described["status"]) == ("Stopped", "Faulted"), described
    assert "the job's runner was lost" in described["reason"]
    quick = pipeline_file(tmp_path, one_operator("quick", "tests.ops:sleep", args="{seconds: 0}"))
    again = platform.create_job(str(quick), str(payload_dir), start=True)
    assert platform.wait_job(again.job_id, timeout=120)["status"] == "Healthy"


def test_cancel_stops_the_running_task(platform, payload_dir, tmp_path):
    marker = tmp_path / "pid"
    path = pipeline_file(
        tmp_path,
        one_operator("long", "tests.ops:sleep", args=f"{{seconds: 60, marker: '{marker}'}}"),
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="operator pid"))
    canceled = platform.core.cancel_job(job.job_id)
    assert (str(canceled.state), str(canceled.status)) == ("Stopped", "Canceled")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=30, what="the operator's worker to be killed")
    described = platform.core.describe_job(job.job_id)
    assert described["operators"][0]["status"] == "Canceled"
    assert not Path(str(marker) + ".done").exists()


def test_operator_timeout(platform, payload_dir, tmp_path):
    path = pipeline_file(
        tmp_path, one_operator("slow", "tests.ops:sleep", args="{seconds: 60}", extra="timeout: 1")
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=60)
    assert (described["state"], described["status"]) == ("Stopped", "Timeout")
    assert described["reason"] == "operator 'only' exceeded its timeout of 1 s"
    assert described["operators"][0]["status"] == "Timeout"


def test_job_timeout(platform, payload_dir, tmp_path):
    path = pipeline_file(
        tmp_path,
        """
    api-version: 0.4.0
    name: slow-job
    timeout: 1.5
    operators:
      - name: only
        run: tests.ops:sleep
        args: {seconds: 60}
        input: [{name: payload}]
    """,
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=60)
    assert described["status"] == "Timeout"
    assert described["reason"] == "job exceeded the pipeline timeout of 1.5 s"


def test_operator_exception_faults_job_with_its_message(platform, payload_dir, tmp_path):
    path = pipeline_file(tmp_path, one_operator("failing", "tests.ops:fail"))
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=60)
    assert described["status"] == "Faulted"
    assert (
        described["reason"]
        == "operator 'only' failed: ValueError: the test operator failed on purpose"
    )
    assert "the test operator failed on purpose" in platform.logs(job.job_id, "only")["only"]


def test_undeclared_outputs_fault_the_job(platform, payload_dir, tmp_path):
    path = pipeline_file(
        tmp_path, one_operator("wrong", "tests.ops:wrong_outputs", extra="output: [{name: volume}]")
    )
    job = platform.create_job(str(path), str(payload_dir), start=True)
    described = platform.wait_job(job.job_id, timeout=60)
    assert described["status"] == "Faulted"
    assert "did not return declared output(s) ['volume']" in described["reason"]
