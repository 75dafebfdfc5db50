"""Tests of clara_ray.core.store and .service: state, queue, idempotence, recovery (no Ray).

Runners are started through a recording fake launcher; a "restart" is a new CoreService over
a new SQLiteStore on the same file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clara_ray.client import PlatformClient
from clara_ray.config.settings import load_settings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.launcher import LaunchUnconfirmed
from clara_ray.contracts.records import (
    ExportState,
    JobPriority,
    JobRecord,
    JobState,
    JobStatus,
    OperatorRecord,
    PayloadRecord,
    PipelineRecord,
)
from clara_ray.core import CoreService, SQLiteStore
from clara_ray.errors import ConflictError, NotFoundError, PipelineValidationError
from clara_ray.export.manifest import MANIFEST_NAME, ExportManifest
from clara_ray.storage import FileEntry, Storage
from tests.unit.core_env import (
    DIAMOND,
    OPERATORS,
    Env,
    FakeLauncher,
    finish_operators,
    queue,
    states,
    with_export_manifest,
)

# -- store ---------------------------------------------------------------------------


def test_store_round_trips_every_record(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "deep" / "dir" / "s.db")
    try:
        pipe = PipelineRecord("p", "id-1", "def", "src", 2, 1.0, 2.0, "desc")
        store.put_pipeline(pipe)
        assert store.get_pipeline("p") == pipe
        assert store.get_pipeline("id-1") == pipe
        assert store.get_pipeline("nope") is None

        pay = PayloadRecord("pay", 3, 42, 5.0, name="ds", source="scp", metadata={"k": [1, 2]})
        store.put_payload(pay)
        assert store.get_payload("pay") == pay
        assert store.find_payload_by_name("ds") == pay

        job = JobRecord(
            job_id="j",
            name="n",
            pipeline="p",
            definition="def",
            payload_id="pay",
            priority=JobPriority.HIGHER,
            state=JobState.RUNNING,
            status=JobStatus.HEALTHY,
            parameters={"amount": 3, "flag": True},
            metadata={"a": "b"},
            warnings=["w"],
            created_at=1.0,
            queued_at=2.0,
            started_at=3.0,
        )
        store.put_job(job)
        got = store.get_job("j")
        assert got == job
        assert (
            got is not None and got.priority is JobPriority.HIGHER and got.state is JobState.RUNNING
        )

        op = OperatorRecord(
            "j",
            "seg",
            JobState.STOPPED,
            JobStatus.FAULTED,
            2,
            1.0,
            4.0,
            "n1",
            "10.0.0.1",
            [0, 1],
            "m",
        )
        store.put_operator(op)
        assert store.list_operators("j") == [op]
    finally:
        store.close()


def test_store_upserts_keep_order_and_filter(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        for i in range(3):
            store.put_job(
                JobRecord(f"j{i}", "n", "p" if i < 2 else "q", "d", "pay", created_at=float(i))
            )
        first = store.get_job("j0")
        assert first is not None
        first.state = JobState.STOPPED
        store.put_job(first)  # an update keeps the job's place
        assert [j.job_id for j in store.list_jobs()] == ["j0", "j1", "j2"]
        assert [j.job_id for j in store.list_jobs(JobState.PENDING)] == ["j1", "j2"]
        assert [j.job_id for j in store.list_jobs(pipeline="p")] == ["j0", "j1"]
        assert [j.job_id for j in store.list_jobs(JobState.PENDING, "p")] == ["j1"]

        store.put_operator(OperatorRecord("j0", "b"))
        store.put_operator(OperatorRecord("j0", "a"))
        store.put_operator(OperatorRecord("j0", "b", attempts=3))
        assert [(o.name, o.attempts) for o in store.list_operators("j0")] == [("b", 3), ("a", 0)]
        assert store.delete_payload("nope") is False
        assert store.delete_pipeline("nope") is False
    finally:
        store.close()


def test_store_persists_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put_job(JobRecord("j", "n", "p", "d", "pay", parameters={"x": 1}))
    store.close()
    again = SQLiteStore(path)
    try:
        job = again.get_job("j")
        assert job is not None and job.parameters == {"x": 1}
    finally:
        again.close()


# -- pipelines ------------------------------------------------------------------------


def test_create_pipeline_versions(core: CoreService) -> None:
    first = core.pipelines.get_pipeline("diamond")
    assert first.version == 1
    assert first.source == "diamond.yaml"
    assert first.description == "a -> (b, c) -> d, passing volumes through the object store"
    assert core.pipelines.create_pipeline(DIAMOND) == first  # same definition: unchanged
    second = core.pipelines.create_pipeline(
        DIAMOND.replace("amount: 2", "amount: 3"), source="v2.yaml"
    )
    assert second.version == 2
    assert second.pipeline_id == first.pipeline_id
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert core.pipelines.get_pipeline(first.pipeline_id).version == 2
    assert [p.name for p in core.pipelines.list_pipelines()] == ["diamond"]


def test_invalid_pipeline_is_refused_and_not_stored(core: CoreService) -> None:
    with pytest.raises(PipelineValidationError, match=r"^bad.yaml: key 'timout': unknown key"):
        core.pipelines.create_pipeline(
            DIAMOND.replace("parameters:", "timout: 3\nparameters:"), source="bad.yaml"
        )
    assert core.pipelines.get_pipeline("diamond").version == 1


def test_delete_pipeline(core: CoreService) -> None:
    assert core.pipelines.delete_pipeline("diamond") is True
    with pytest.raises(NotFoundError, match=r"pipeline 'diamond' does not exist"):
        core.pipelines.get_pipeline("diamond")
    with pytest.raises(NotFoundError, match=r"pipeline 'diamond' does not exist"):
        core.pipelines.delete_pipeline("diamond")


# -- payloads ---------------------------------------------------------------------------


def test_register_payload_seals_and_records(env: Env, core: CoreService) -> None:
    rec = core.payloads.get_payload("pay-1")
    assert rec.files == 2 and rec.bytes == 1005
    assert rec.name == "study-1" and rec.source == "test"
    assert env.storage.is_sealed("pay-1")
    assert core.payloads.get_payload("study-1") == rec  # by name
    assert core.payloads.register_payload("pay-1", name="other") == rec  # idempotent
    assert [p.payload_id for p in core.payloads.list_payloads()] == ["pay-1"]


def test_payload_name_is_unique(env: Env, core: CoreService, payload_dir: Path) -> None:
    env.storage.upload_payload("pay-2", payload_dir)
    with pytest.raises(ConflictError, match=r"a payload named 'study-1' already exists \(pay-1\)"):
        core.payloads.register_payload("pay-2", name="study-1")
    assert not env.storage.is_sealed("pay-2")


def test_unknown_payload(core: CoreService) -> None:
    with pytest.raises(NotFoundError, match=r"payload 'nope' does not exist"):
        core.payloads.get_payload("nope")


def test_delete_payload_in_use_then_free(env: Env, core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1")
    with pytest.raises(ConflictError, match=r"payload pay-1 is used by unfinished jobs: j1"):
        core.payloads.delete_payload("study-1")
    core.cancel_job("j1")
    assert core.payloads.delete_payload("study-1") is True
    assert not env.storage.is_sealed("pay-1")
    with pytest.raises(NotFoundError, match="payload 'pay-1' does not exist"):
        core.payloads.get_payload("pay-1")


# -- jobs -------------------------------------------------------------------------------


def test_create_job_records_job_and_operators(core: CoreService) -> None:
    job = core.create_job("j1", "diamond", "study-1", parameters={"amount": "7"}, metadata={"n": 1})
    assert job.state is JobState.PENDING and job.status is JobStatus.HEALTHY
    assert job.payload_id == "pay-1"
    assert job.parameters == {"amount": 7}
    assert job.metadata == {"n": "1"}
    assert job.priority is JobPriority.NORMAL
    assert job.queued_at is None
    assert job.name.startswith("diamond-")
    assert core.get_job("j1") == job
    ops = core.describe_job("j1")["operators"]
    assert [o["name"] for o in ops] == OPERATORS
    assert {o["state"] for o in ops} == {"Pending"}


def test_create_job_is_idempotent_by_caller_id(env: Env, core: CoreService) -> None:
    first = core.create_job("j1", "diamond", "pay-1", name="first")
    again = core.create_job("j1", "diamond", "pay-1", name="first")
    assert again == first
    assert [j.job_id for j in core.list_jobs()] == ["j1"]
    env.restart()
    assert env.core.create_job("j1", "diamond", "pay-1", name="first") == first


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pipeline": "nope"}, NotFoundError, r"pipeline 'nope' does not exist"),
        ({"payload": "nope"}, NotFoundError, r"payload 'nope' does not exist"),
        (
            {"priority": "urgent"},
            ValueError,
            r"priority 'urgent' is not one of: lower, normal, higher, immediate",
        ),
        ({"parameters": {"amout": 1}}, PipelineValidationError, r"unknown parameter 'amout'"),
        (
            {"parameters": {"amount": "x"}},
            PipelineValidationError,
            r"parameter 'amount': value 'x' is not a int",
        ),
    ],
)
def test_create_job_errors_store_nothing(
    core: CoreService, kwargs: dict, error: type, match: str
) -> None:
    args = {"pipeline": "diamond", "payload": "pay-1", **kwargs}
    with pytest.raises(error, match=match):
        core.create_job("j1", args.pop("pipeline"), args.pop("payload"), **args)
    assert core.list_jobs() == []


def test_priority_accepts_any_case(core: CoreService) -> None:
    assert (
        core.create_job("j1", "diamond", "pay-1", priority="HIGHER").priority is JobPriority.HIGHER
    )


def test_unknown_job(core: CoreService) -> None:
    with pytest.raises(NotFoundError, match=r"job 'nope' does not exist"):
        core.get_job("nope")
    with pytest.raises(NotFoundError, match=r"job 'nope' does not exist"):
        core.start_job("nope")
    with pytest.raises(NotFoundError, match=r"job 'nope' does not exist"):
        core.cancel_job("nope")


def test_list_jobs_filters(core: CoreService) -> None:
    queue(core, "j1")
    core.create_job("j2", "diamond", "pay-1")
    assert [j.job_id for j in core.list_jobs("running")] == ["j1"]
    assert [j.job_id for j in core.list_jobs("Pending")] == ["j2"]
    assert [j.job_id for j in core.list_jobs(pipeline="diamond")] == ["j1", "j2"]
    assert core.list_jobs(pipeline="other") == []
    with pytest.raises(ValueError, match=r"state 'done' is not one of: Pending, Running, Stopped"):
        core.list_jobs("done")


def test_update_metadata_merges(core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1", metadata={"a": "1"})
    core.update_metadata("j1", {"b": 2})
    assert core.get_job("j1").metadata == {"a": "1", "b": "2"}


def test_start_job_launches_it(env: Env, core: CoreService) -> None:
    job = queue(core, "j1")
    assert job.state is JobState.RUNNING
    assert job.queued_at is not None and job.started_at is not None
    assert env.launched() == ["j1"]


def test_start_is_idempotent(env: Env, core: CoreService) -> None:
    first = queue(core, "j1")
    again = core.start_job("j1")
    assert again.queued_at == first.queued_at
    assert env.launched() == ["j1"]


def test_start_of_stopped_job_is_a_conflict(core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1")
    core.cancel_job("j1")
    with pytest.raises(
        ConflictError, match=r"job j1 has already stopped \(Canceled\); create a new job"
    ):
        core.start_job("j1")


# -- the queue --------------------------------------------------------------------------


def test_max_concurrent_jobs_holds_the_rest(env: Env, core: CoreService) -> None:
    for j in ("j1", "j2", "j3"):
        queue(core, j)
    assert states(core, "j1", "j2", "j3") == ["Running", "Running", "Pending"]
    assert env.launched() == ["j1", "j2"]
    assert core.get_job("j3").queued_at is not None


def test_created_but_not_started_jobs_are_not_admitted(env: Env, core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1")
    queue(core, "j2")
    assert states(core, "j1", "j2") == ["Pending", "Running"]
    assert env.launched() == ["j2"]


def test_higher_priority_is_admitted_first_then_fifo(env: Env, core: CoreService) -> None:
    queue(core, "r1")
    queue(core, "r2")  # the two slots are taken
    queue(core, "low", "lower")
    queue(core, "n1", "normal")
    queue(core, "high", "higher")
    queue(core, "n2", "normal")
    order = []
    for running in ("r1", "r2", "high", "n1", "n2", "low"):
        core.job_stopped(running, "Healthy")
        order.append(env.launched()[-1])
    assert order == ["high", "n1", "n2", "low", "low", "low"]
    assert env.launched() == ["r1", "r2", "high", "n1", "n2", "low"]


def test_immediate_job_is_admitted_beyond_the_limit(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    queue(core, "j2")
    queue(core, "j3")
    urgent = queue(core, "urgent", "immediate")
    assert urgent.state is JobState.RUNNING
    assert states(core, "j1", "j2", "j3") == ["Running", "Running", "Pending"]
    assert env.launched() == ["j1", "j2", "urgent"]
    # with three running, one finishing leaves the count at the limit: j3 still waits
    core.job_stopped("j1", "Healthy")
    assert core.get_job("j3").state is JobState.PENDING
    core.job_stopped("j2", "Healthy")
    assert core.get_job("j3").state is JobState.RUNNING


def test_failed_launch_faults_the_job(env: Env, core: CoreService) -> None:
    env.launcher.fail_with = RuntimeError("no Ray here")
    job = queue(core, "j1")
    assert job.state is JobState.STOPPED and job.status is JobStatus.FAULTED
    assert job.reason == "could not start the job runner: no Ray here"
    env.launcher.fail_with = None
    queue(core, "j2")
    queue(core, "j3")
    assert states(core, "j2", "j3") == ["Running", "Running"]  # the faulted job took no slot


# -- cancel -----------------------------------------------------------------------------


def test_cancel_running_job_stops_runner_and_admits_next(env: Env, core: CoreService) -> None:
    for j in ("j1", "j2", "j3"):
        queue(core, j)
    core.operator_started("j1", "source", started_at=5.0, node_id="n", node_ip="ip", gpu_ids=[])
    job = core.cancel_job("j1", reason="operator asked")
    assert job.state is JobState.STOPPED and job.status is JobStatus.CANCELED
    assert job.reason == "operator asked"
    assert env.launcher.canceled == ["j1"]
    assert core.get_job("j3").state is JobState.RUNNING
    ops = {o["name"]: o for o in core.describe_job("j1")["operators"]}
    assert ops["source"]["status"] == "Canceled" and ops["source"]["ended_at"] is not None
    assert ops["join"]["status"] == "Canceled" and ops["join"]["ended_at"] is None
    assert ops["join"]["message"] == "job stopped: Canceled"


def test_cancel_queued_job_does_not_touch_a_runner(env: Env, core: CoreService) -> None:
    for j in ("j1", "j2", "j3"):
        queue(core, j)
    core.cancel_job("j3")
    assert core.get_job("j3").status is JobStatus.CANCELED
    assert env.launcher.canceled == []


def test_cancel_is_idempotent(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    first = core.cancel_job("j1")
    again = core.cancel_job("j1", reason="other")
    assert again.reason == first.reason == "canceled by request"
    assert again.ended_at == first.ended_at
    assert env.launcher.canceled == ["j1"]


# -- reports from runners ----------------------------------------------------------------


def test_operator_reports(core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started(
        "j1", "source", started_at=10.0, node_id="node-a", node_ip="10.0.0.2", gpu_ids=[1]
    )
    op = core.describe_job("j1")["operators"][0]
    assert (op["state"], op["attempts"], op["node_id"], op["gpu_ids"]) == (
        "Running",
        1,
        "node-a",
        [1],
    )
    core.operator_stopped("j1", "source", status="Healthy", ended_at=12.5, message="ok")
    op = core.describe_job("j1")["operators"][0]
    assert (op["state"], op["status"], op["duration"], op["message"]) == (
        "Stopped",
        "Healthy",
        2.5,
        "ok",
    )
    assert op["node_ip"] == "10.0.0.2"
    # a late, repeated report changes nothing
    core.operator_started(
        "j1", "source", started_at=20.0, node_id="node-b", node_ip="x", gpu_ids=[]
    )
    core.operator_stopped("j1", "source", status="Faulted", ended_at=30.0)
    assert core.describe_job("j1")["operators"][0] == op


def test_operator_stopped_without_a_start_report(core: CoreService) -> None:
    queue(core, "j1")
    core.operator_stopped(
        "j1",
        "left",
        status="Faulted",
        ended_at=9.0,
        message="boom",
        started_at=8.0,
        node_id="n",
        node_ip="ip",
        gpu_ids=[0],
    )
    op = {o["name"]: o for o in core.describe_job("j1")["operators"]}["left"]
    assert (op["status"], op["attempts"], op["duration"], op["gpu_ids"]) == ("Faulted", 1, 1.0, [0])


def test_report_for_unknown_operator(core: CoreService) -> None:
    queue(core, "j1")
    with pytest.raises(NotFoundError, match=r"job j1 has no operator 'nope'"):
        core.operator_started("j1", "nope", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])


def test_job_warning_is_recorded_once(core: CoreService) -> None:
    queue(core, "j1")
    core.job_warning("j1", "no GPU in the cluster; running on CPU")
    core.job_warning("j1", "no GPU in the cluster; running on CPU")
    assert core.get_job("j1").warnings == ["no GPU in the cluster; running on CPU"]


def test_job_stopped_report(core: CoreService) -> None:
    queue(core, "j1")
    for op in OPERATORS:
        core.operator_started("j1", op, started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
        core.operator_stopped("j1", op, status="Healthy", ended_at=2.0)
    job = core.job_stopped("j1", "Healthy")
    assert (job.state, job.status, job.reason) == (JobState.STOPPED, JobStatus.HEALTHY, None)
    assert job.duration is not None and job.duration > 0
    again = core.job_stopped("j1", "Faulted", "late")  # a repeated report changes nothing
    assert (again.status, again.reason) == (JobStatus.HEALTHY, None)


def test_job_faulted_report_marks_unfinished_operators(core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    job = core.job_stopped("j1", "Timeout", "the job ran past its 60 s timeout")
    assert job.status is JobStatus.TIMEOUT
    statuses = {o["name"]: o["status"] for o in core.describe_job("j1")["operators"]}
    assert statuses == dict.fromkeys(OPERATORS, "Timeout")


def test_describe_job_lists_results(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    env.storage.results("j1", "join").write_json("combined.json", {"total": 1})
    described = core.describe_job("j1")
    size = len(env.storage.results("j1", "join").read_bytes("combined.json"))
    assert described["results"] == [{"path": "join/combined.json", "size": size}]
    assert size > 0
    assert "definition" not in described
    assert described["queued"] is True


# -- persistence and recovery --------------------------------------------------------------


def test_state_survives_a_restart(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id="n", node_ip=None, gpu_ids=[])
    before = core.describe_job("j1")
    new = env.restart()
    assert new.describe_job("j1") == before
    assert new.pipelines.get_pipeline("diamond").version == 1
    assert new.payloads.get_payload("study-1").payload_id == "pay-1"


def test_recover_keeps_jobs_whose_runner_is_alive(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    env.restart()
    env.recover()
    assert env.core.get_job("j1").state is JobState.RUNNING
    assert env.launched() == ["j1"]  # not launched a second time


def test_recover_relaunches_job_whose_runner_died_before_any_operator(
    env: Env, core: CoreService
) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()  # a fresh cluster: no runner is alive
    env.restart(launcher)
    env.recover()
    job = env.core.get_job("j1")
    assert job.state is JobState.RUNNING and job.status is JobStatus.HEALTHY
    assert env.launched() == ["j1"]


def test_recover_faults_job_whose_runner_died_after_an_operator_started(
    env: Env, core: CoreService
) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    launcher = FakeLauncher()
    env.restart(launcher)
    env.recover()
    job = env.core.get_job("j1")
    assert job.state is JobState.STOPPED and job.status is JobStatus.FAULTED
    assert (
        job.reason is not None
        and "runner was lost" in job.reason
        and "create a new job" in job.reason
    )
    assert env.launched() == []
    statuses = {o["name"]: o["status"] for o in env.core.describe_job("j1")["operators"]}
    assert statuses == dict.fromkeys(OPERATORS, "Faulted")


def test_recover_admits_queued_jobs_into_freed_slots(env: Env, core: CoreService) -> None:
    for j in ("j1", "j2", "j3"):
        queue(core, j)
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    launcher = FakeLauncher()
    launcher.alive.add("j2")  # j2's runner survived; j1's is gone
    env.restart(launcher)
    env.recover()
    assert states(env.core, "j1", "j2", "j3") == ["Stopped", "Running", "Running"]
    assert env.launched() == ["j3"]


def test_recover_with_failing_launcher_faults_the_relaunch(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()
    launcher.fail_with = RuntimeError("cluster unreachable")
    env.restart(launcher)
    env.recover()
    job = env.core.get_job("j1")
    assert job.status is JobStatus.FAULTED
    assert job.reason == "could not start the job runner: cluster unreachable"


def test_recover_is_idempotent(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()
    env.restart(launcher)
    env.core.recover()
    env.core.recover()
    assert env.launched() == ["j1"]


# -- units of work -------------------------------------------------------------------------


class FailingWrites:
    """Wraps a store method so that its ``fail_at``-th call raises."""

    def __init__(self, method: Callable[..., Any], fail_at: int) -> None:
        self.method, self.fail_at, self.calls = method, fail_at, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk full")
        return self.method(*args, **kwargs)


def test_stop_is_one_unit_of_work_a_failed_operator_write_leaves_the_job_running(
    env: Env, core: CoreService, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(core, "j1")
    before = core.describe_job("j1")
    monkeypatch.setattr(core.store, "put_operator", FailingWrites(core.store.put_operator, 2))
    with pytest.raises(OSError, match="disk full"):
        core.cancel_job("j1")
    assert core.describe_job("j1") == before  # neither the job nor any operator was stopped


def test_create_job_is_one_unit_of_work(core: CoreService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.store, "put_operator", FailingWrites(core.store.put_operator, 3))
    with pytest.raises(OSError, match="disk full"):
        core.create_job("j1", "diamond", "pay-1")
    with pytest.raises(NotFoundError):
        core.get_job("j1")
    assert core.store.list_operators("j1") == []


# -- a Healthy job always gets its exports ------------------------------------------------


class FlakyListing:
    """``Storage.list_results`` that fails ``failures`` times (as an S3 LIST can), then works."""

    def __init__(self, storage: Storage, failures: int) -> None:
        self.list_results, self.failures, self.calls = storage.list_results, failures, 0

    def __call__(self, job_id: str, operator: str | None = None) -> list[FileEntry]:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("When listing objects under key 'results': AWS Error NETWORK_CONNECTION")
        return self.list_results(job_id, operator)


def test_storage_error_at_a_healthy_end_records_nothing_and_the_retried_report_gets_exports(
    env: Env, core: CoreService, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(core, "j1")
    finish_operators(core, "j1")
    with_export_manifest(env, "j1")
    listing = FlakyListing(env.storage, failures=1)
    monkeypatch.setattr(env.storage, "list_results", listing)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        core.job_stopped("j1", "Healthy")
    assert core.get_job("j1").state is JobState.RUNNING  # not Stopped without its exports
    job = core.job_stopped("j1", "Healthy")  # the runner reports again
    assert (job.state, job.status, job.exports_created) == (
        JobState.STOPPED,
        JobStatus.HEALTHY,
        True,
    )
    exports = core.exports.list_exports("j1")
    assert [(e.destination, e.state, e.files) for e in exports] == [
        ("PACS", ExportState.PENDING, ["join/seg.dcm"])
    ]


def test_unreadable_manifest_of_a_healthy_job_leaves_one_failed_record(
    env: Env, core: CoreService
) -> None:
    queue(core, "j1")
    env.storage.results("j1", "join").write_text(MANIFEST_NAME, "{not json")
    core.job_stopped("j1", "Healthy")
    (rec,) = core.exports.list_exports("j1")
    assert (rec.operator, rec.state) == ("-", ExportState.FAILED)
    assert rec.reason is not None and rec.reason.startswith("export manifest unreadable")
    assert core.get_job("j1").exports_created


def test_recover_records_exports_of_a_healthy_job_stopped_without_them(
    env: Env, core: CoreService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As left by a Core that died between the two (or by an older version)."""
    queue(core, "j1")
    with_export_manifest(env, "j1")
    job = core.get_job("j1")
    job.state, job.status, job.ended_at = JobState.STOPPED, JobStatus.HEALTHY, 5.0
    core.store.put_job(job)
    assert core.exports.list_exports("j1") == []
    new = env.restart()
    listing = FlakyListing(env.storage, failures=1)
    monkeypatch.setattr(env.storage, "list_results", listing)
    env.recover()  # storage still failing: tried again on the next tick
    assert new.exports.list_exports("j1") == [] and not new.get_job("j1").exports_created
    env.recover()
    assert [e.destination for e in new.exports.list_exports("j1")] == ["PACS"]
    assert new.get_job("j1").exports_created
    env.recover()  # nothing left to repair: storage is not listed again
    assert listing.calls == 2


# -- retried calls -----------------------------------------------------------------------


def test_retried_operator_started_counts_one_attempt(core: CoreService) -> None:
    queue(core, "j1")
    for _ in range(2):  # the same report, retried
        core.operator_started(
            "j1", "source", started_at=10.0, node_id="n", node_ip="ip", gpu_ids=[]
        )
    assert core.describe_job("j1")["operators"][0]["attempts"] == 1
    core.operator_started("j1", "source", started_at=11.0, node_id="n", node_ip="ip", gpu_ids=[])
    op = core.describe_job("j1")["operators"][0]
    assert (op["attempts"], op["started_at"]) == (2, 11.0)  # a new attempt counts


def healthy_job_with_exports(env: Env, job_id: str, destinations: tuple[str, ...]) -> None:
    queue(env.core, job_id)
    for name in destinations:
        env.core.dicom.dicom_put(
            "destination", {"name": name, "ae_title": "PEER", "host": "pacs", "port": 104}
        )
    results = env.storage.results(job_id, "join")
    results.write_bytes("seg.dcm", b"\0" * 132 + b"DICM")
    results.write_text(
        MANIFEST_NAME, ExportManifest(destinations=destinations, files=("join/seg.dcm",)).to_json()
    )
    env.core.job_stopped(job_id, "Healthy")


def test_retried_claim_returns_the_same_export(env: Env, core: CoreService) -> None:
    healthy_job_with_exports(env, "j1", ("PACS", "RESEARCH"))
    first = core.exports.claim_export("adapter-1", 60.0, claim_id="claim-a")
    retried = core.exports.claim_export("adapter-1", 60.0, claim_id="claim-a")
    assert first is not None and retried is not None
    assert retried["export"].export_id == first["export"].export_id
    assert retried["export"].attempts == 1
    other = core.exports.claim_export("adapter-1", 60.0, claim_id="claim-b")
    assert other is not None and other["export"].export_id != first["export"].export_id
    assert core.exports.claim_export("adapter-1", 60.0, claim_id="claim-c") is None


# -- resending an export -----------------------------------------------------------------


def test_resend_export_makes_a_failed_export_pending_again(env: Env, core: CoreService) -> None:
    healthy_job_with_exports(env, "j1", ("PACS",))
    claimed = core.exports.claim_export("adapter-1", claim_id="c1")
    assert claimed is not None
    export_id = claimed["export"].export_id
    with pytest.raises(ConflictError, match=r"is InProgress; only a Failed export can be resent"):
        core.exports.resend_export(export_id)
    core.exports.export_finished(export_id, ok=False, reason="association rejected", sent=1)
    assert core.exports.get_export(export_id).state is ExportState.FAILED
    rec = core.exports.resend_export(export_id[:12])  # a prefix, as `list exports` shows it
    assert (rec.export_id, rec.state, rec.attempts, rec.reason, rec.sent) == (
        export_id,
        ExportState.PENDING,
        0,
        None,
        0,
    )
    assert rec.next_attempt_at == rec.updated_at and rec.lease_until is None
    assert core.exports.get_export(export_id) == rec
    with pytest.raises(ConflictError, match=r"is Pending; only a Failed export can be resent"):
        core.exports.resend_export(export_id)
    again = core.exports.claim_export("adapter-1", claim_id="c2")
    assert again is not None and again["export"].export_id == export_id
    core.exports.export_finished(export_id, ok=True, sent=1)
    with pytest.raises(ConflictError, match=r"is Succeeded; only a Failed export can be resent"):
        core.exports.resend_export(export_id)


def test_resend_export_errors(env: Env, core: CoreService) -> None:
    with pytest.raises(NotFoundError, match=r"export 'nope' does not exist"):
        core.exports.resend_export("nope")
    queue(core, "j1")
    env.storage.results("j1", "join").write_text(MANIFEST_NAME, "{not json")
    core.job_stopped("j1", "Healthy")
    (rec,) = core.exports.list_exports("j1")
    with pytest.raises(ConflictError, match=r"has nothing to send: .* could not be read"):
        core.exports.resend_export(rec.export_id)


# -- the Core does not wait on runners -----------------------------------------------------


def test_unknown_liveness_never_faults_a_job(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    launcher = FakeLauncher()  # its runner is gone, but the host does not answer
    launcher.unknown = True
    env.restart(launcher)
    for _ in range(3):
        env.recover()
    assert env.core.get_job("j1").state is JobState.RUNNING
    assert env.launched() == []
    launcher.unknown = False  # a definite answer without the job
    env.recover()
    assert env.core.get_job("j1").status is JobStatus.FAULTED


class BlockingLauncher(FakeLauncher):
    """A launcher whose launches wait until ``release`` is set (a slow Ray round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def launch(self, job: JobRecord) -> None:
        self.entered.set()
        assert self.release.wait(timeout=30)
        super().launch(job)


def answers_within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, run on a thread; fails if it does not return within ``seconds``."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"no answer within {seconds} s"
    return result[0]


def test_requests_answer_while_a_launch_is_slow(env: Env, core: CoreService) -> None:
    launcher = BlockingLauncher()
    env.restart(launcher)
    new = env.core
    new.create_job("j1", "diamond", "pay-1")
    started = answers_within(5, lambda: new.start_job("j1"))
    assert started.state is JobState.RUNNING  # admitted; its runner starts in the background
    assert launcher.entered.wait(timeout=5)
    created = answers_within(5, lambda: new.create_job("j2", "diamond", "pay-1"))
    assert created.job_id == "j2"
    assert [j.job_id for j in answers_within(5, new.list_jobs)] == ["j1", "j2"]
    assert answers_within(5, lambda: new.describe_job("j1"))["state"] == "Running"
    launcher.release.set()
    assert env.launched() == ["j1"]


def test_unconfirmed_launch_keeps_the_job_running_and_recover_starts_it_again(
    env: Env, core: CoreService
) -> None:
    env.launcher.fail_with = LaunchUnconfirmed("GetTimeoutError: start took over 60 s")
    job = queue(core, "j1")
    assert (job.state, job.status) == (JobState.RUNNING, JobStatus.HEALTHY)
    env.launcher.fail_with = None
    env.recover()  # the host does not hold it and no operator started: start it again
    assert env.launched() == ["j1"]
    assert core.get_job("j1").state is JobState.RUNNING


def test_job_canceled_while_its_runner_starts_is_canceled_on_the_host(
    env: Env, core: CoreService
) -> None:
    launcher = BlockingLauncher()
    env.restart(launcher)
    env.core.create_job("j1", "diamond", "pay-1")
    env.core.start_job("j1")
    assert launcher.entered.wait(timeout=5)
    env.core.cancel_job("j1")
    launcher.release.set()
    assert env.launched() == ["j1"]
    assert launcher.canceled == ["j1", "j1"]  # once on cancel, once when the start returned


def test_recover_cancels_a_run_the_core_holds_stopped(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    core.job_stopped("j1", "Faulted", "the job's runner was lost")
    env.launcher.alive.add("j1")  # it ran on after all
    env.recover()
    assert env.launcher.canceled == ["j1"]


# -- polling is cheap ----------------------------------------------------------------------


class CountingListing:
    def __init__(self, storage: Storage) -> None:
        self.list_results, self.calls = storage.list_results, 0

    def __call__(self, job_id: str, operator: str | None = None) -> list[FileEntry]:
        self.calls += 1
        return self.list_results(job_id, operator)


def test_wait_job_polls_without_listing_results(
    env: Env, core: CoreService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(core, "j1")
    env.storage.results("j1", "join").write_json("combined.json", {"total": 1})
    listing = CountingListing(env.storage)
    monkeypatch.setattr(env.storage, "list_results", listing)
    polls: list[str] = []
    by_the_stop = 0  # the Healthy stop reads the results for their exports

    class PollingCore(CoreClient):
        def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal by_the_stop
            polls.append(method)
            if len(polls) == 10:
                before = listing.calls
                core.job_stopped("j1", "Healthy")
                by_the_stop = listing.calls - before
            return getattr(core, method)(*args, **kwargs)

    client = PlatformClient(
        load_settings(env={"CLARA_RAY_DATA_DIR": str(tmp_path / "client")}),
        PollingCore("in-process", "test"),
    )
    described = client.wait_job("j1", timeout=30, poll=0.001)
    assert described["status"] == "Healthy"
    assert [r["path"] for r in described["results"]] == ["join/combined.json"]
    assert len(polls) > 10
    assert listing.calls - by_the_stop == 1  # the final description only


def test_describe_job_lists_a_stopped_jobs_results_once(
    env: Env, core: CoreService, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue(core, "j1")
    env.storage.results("j1", "join").write_json("combined.json", {"total": 1})
    listing = CountingListing(env.storage)
    monkeypatch.setattr(env.storage, "list_results", listing)
    core.describe_job("j1")
    core.describe_job("j1")
    assert listing.calls == 2  # a running job's results may still change
    assert "results" not in core.describe_job("j1", results=False)
    core.job_stopped("j1", "Healthy")
    calls = listing.calls
    first = core.describe_job("j1")
    for _ in range(5):
        assert core.describe_job("j1") == first
    assert listing.calls == calls + 1
    assert [r["path"] for r in first["results"]] == ["join/combined.json"]
