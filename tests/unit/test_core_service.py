"""Tests of clara_ray.core.store and .service: state, queue, idempotence, recovery (no Ray).

Runners are started through a recording fake launcher; a "restart" is a new CoreService over
a new SQLiteStore on the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clara_ray.core import (
    CoreService,
    JobPriority,
    JobRecord,
    JobState,
    JobStatus,
    OperatorRecord,
    SQLiteStore,
)
from clara_ray.core.model import PayloadRecord, PipelineRecord
from clara_ray.errors import ConflictError, NotFoundError, PipelineValidationError
from clara_ray.storage import Storage

DIAMOND = (Path(__file__).resolve().parent.parent / "pipelines" / "diamond.yaml").read_text()
OPERATORS = ["source", "left", "right", "join"]


class FakeLauncher:
    """Records launches and cancels; runners stay 'alive' until told otherwise."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.canceled: list[str] = []
        self.alive: set[str] = set()
        self.fail_with: Exception | None = None

    def launch(self, job: JobRecord) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.launched.append(job.job_id)
        self.alive.add(job.job_id)

    def is_alive(self, job_id: str) -> bool:
        return job_id in self.alive

    def cancel(self, job_id: str) -> None:
        self.canceled.append(job_id)
        self.alive.discard(job_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Env:
    """A Core with its store file, storage and launcher; ``restart()`` builds a new Core."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "state" / "clara.db"
        self.storage = Storage(str(tmp_path / "storage"))
        self.launcher = FakeLauncher()
        self.clock = Clock()
        self.stores: list[SQLiteStore] = []
        self.core = self._new_core(max_concurrent_jobs=2)

    def _new_core(self, max_concurrent_jobs: int) -> CoreService:
        store = SQLiteStore(self.db)
        self.stores.append(store)
        return CoreService(
            store,
            self.storage,
            self.launcher,
            max_concurrent_jobs=max_concurrent_jobs,
            clock=self.clock,
        )

    def restart(
        self, launcher: FakeLauncher | None = None, max_concurrent_jobs: int = 2
    ) -> CoreService:
        self.stores[-1].close()
        if launcher is not None:
            self.launcher = launcher
        self.core = self._new_core(max_concurrent_jobs)
        return self.core

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def env(tmp_path: Path, payload_dir: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    e.storage.upload_payload("pay-1", payload_dir)
    e.core.register_payload("pay-1", name="study-1", source="test")
    e.core.create_pipeline(DIAMOND, source="diamond.yaml")
    yield e
    e.close()


@pytest.fixture
def core(env: Env) -> CoreService:
    return env.core


def queue(core: CoreService, job_id: str, priority: str = "normal") -> JobRecord:
    core.create_job(job_id, "diamond", "pay-1", priority=priority)
    return core.start_job(job_id)


def states(core: CoreService, *job_ids: str) -> list[str]:
    return [str(core.get_job(j).state) for j in job_ids]


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
    first = core.get_pipeline("diamond")
    assert first.version == 1
    assert first.source == "diamond.yaml"
    assert first.description == "a -> (b, c) -> d, passing volumes through the object store"
    assert core.create_pipeline(DIAMOND) == first  # same definition: unchanged
    second = core.create_pipeline(DIAMOND.replace("amount: 2", "amount: 3"), source="v2.yaml")
    assert second.version == 2
    assert second.pipeline_id == first.pipeline_id
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert core.get_pipeline(first.pipeline_id).version == 2
    assert [p.name for p in core.list_pipelines()] == ["diamond"]


def test_invalid_pipeline_is_refused_and_not_stored(core: CoreService) -> None:
    with pytest.raises(PipelineValidationError, match=r"^bad.yaml: key 'timout': unknown key"):
        core.create_pipeline(
            DIAMOND.replace("parameters:", "timout: 3\nparameters:"), source="bad.yaml"
        )
    assert core.get_pipeline("diamond").version == 1


def test_delete_pipeline(core: CoreService) -> None:
    assert core.delete_pipeline("diamond") is True
    with pytest.raises(NotFoundError, match=r"pipeline 'diamond' does not exist"):
        core.get_pipeline("diamond")
    with pytest.raises(NotFoundError, match=r"pipeline 'diamond' does not exist"):
        core.delete_pipeline("diamond")


# -- payloads ---------------------------------------------------------------------------


def test_register_payload_seals_and_records(env: Env, core: CoreService) -> None:
    rec = core.get_payload("pay-1")
    assert rec.files == 2 and rec.bytes == 1005
    assert rec.name == "study-1" and rec.source == "test"
    assert env.storage.is_sealed("pay-1")
    assert core.get_payload("study-1") == rec  # by name
    assert core.register_payload("pay-1", name="other") == rec  # idempotent
    assert [p.payload_id for p in core.list_payloads()] == ["pay-1"]


def test_payload_name_is_unique(env: Env, core: CoreService, payload_dir: Path) -> None:
    env.storage.upload_payload("pay-2", payload_dir)
    with pytest.raises(ConflictError, match=r"a payload named 'study-1' already exists \(pay-1\)"):
        core.register_payload("pay-2", name="study-1")
    assert not env.storage.is_sealed("pay-2")


def test_unknown_payload(core: CoreService) -> None:
    with pytest.raises(NotFoundError, match=r"payload 'nope' does not exist"):
        core.get_payload("nope")


def test_delete_payload_in_use_then_free(env: Env, core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1")
    with pytest.raises(ConflictError, match=r"payload pay-1 is used by unfinished jobs: j1"):
        core.delete_payload("study-1")
    core.cancel_job("j1")
    assert core.delete_payload("study-1") is True
    assert not env.storage.is_sealed("pay-1")
    with pytest.raises(NotFoundError, match="payload 'pay-1' does not exist"):
        core.get_payload("pay-1")


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
    assert env.launcher.launched == ["j1"]


def test_start_is_idempotent(env: Env, core: CoreService) -> None:
    first = queue(core, "j1")
    again = core.start_job("j1")
    assert again.queued_at == first.queued_at
    assert env.launcher.launched == ["j1"]


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
    assert env.launcher.launched == ["j1", "j2"]
    assert core.get_job("j3").queued_at is not None


def test_created_but_not_started_jobs_are_not_admitted(env: Env, core: CoreService) -> None:
    core.create_job("j1", "diamond", "pay-1")
    queue(core, "j2")
    assert states(core, "j1", "j2") == ["Pending", "Running"]
    assert env.launcher.launched == ["j2"]


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
        order.append(env.launcher.launched[-1])
    assert order == ["high", "n1", "n2", "low", "low", "low"]
    assert env.launcher.launched == ["r1", "r2", "high", "n1", "n2", "low"]


def test_immediate_job_is_admitted_beyond_the_limit(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    queue(core, "j2")
    queue(core, "j3")
    urgent = queue(core, "urgent", "immediate")
    assert urgent.state is JobState.RUNNING
    assert states(core, "j1", "j2", "j3") == ["Running", "Running", "Pending"]
    assert env.launcher.launched == ["j1", "j2", "urgent"]
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
    assert new.get_pipeline("diamond").version == 1
    assert new.get_payload("study-1").payload_id == "pay-1"


def test_recover_keeps_jobs_whose_runner_is_alive(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    env.restart().recover()
    assert env.core.get_job("j1").state is JobState.RUNNING
    assert env.launcher.launched == ["j1"]  # not launched a second time


def test_recover_relaunches_job_whose_runner_died_before_any_operator(
    env: Env, core: CoreService
) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()  # a fresh cluster: no runner is alive
    env.restart(launcher).recover()
    job = env.core.get_job("j1")
    assert job.state is JobState.RUNNING and job.status is JobStatus.HEALTHY
    assert launcher.launched == ["j1"]


def test_recover_faults_job_whose_runner_died_after_an_operator_started(
    env: Env, core: CoreService
) -> None:
    queue(core, "j1")
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    launcher = FakeLauncher()
    env.restart(launcher).recover()
    job = env.core.get_job("j1")
    assert job.state is JobState.STOPPED and job.status is JobStatus.FAULTED
    assert (
        job.reason is not None
        and "runner was lost" in job.reason
        and "create a new job" in job.reason
    )
    assert launcher.launched == []
    statuses = {o["name"]: o["status"] for o in env.core.describe_job("j1")["operators"]}
    assert statuses == dict.fromkeys(OPERATORS, "Faulted")


def test_recover_admits_queued_jobs_into_freed_slots(env: Env, core: CoreService) -> None:
    for j in ("j1", "j2", "j3"):
        queue(core, j)
    core.operator_started("j1", "source", started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
    launcher = FakeLauncher()
    launcher.alive.add("j2")  # j2's runner survived; j1's is gone
    env.restart(launcher).recover()
    assert states(env.core, "j1", "j2", "j3") == ["Stopped", "Running", "Running"]
    assert launcher.launched == ["j3"]


def test_recover_with_failing_launcher_faults_the_relaunch(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()
    launcher.fail_with = RuntimeError("cluster unreachable")
    env.restart(launcher).recover()
    job = env.core.get_job("j1")
    assert job.status is JobStatus.FAULTED
    assert job.reason == "could not start the job runner: cluster unreachable"


def test_recover_is_idempotent(env: Env, core: CoreService) -> None:
    queue(core, "j1")
    launcher = FakeLauncher()
    env.restart(launcher)
    env.core.recover()
    env.core.recover()
    assert launcher.launched == ["j1"]
