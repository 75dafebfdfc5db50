"""Tests of clara_ray.runner.outbox and of how a job runner uses it (no Ray cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray.exceptions import GetTimeoutError

from clara_ray.contracts.core_client import CoreClient
from clara_ray.errors import NotFoundError
from clara_ray.runner.job_runner import JobRun, RunnerConfig
from clara_ray.runner.metrics import RunnerMetrics
from clara_ray.runner.outbox import Report, ReportOutbox


class FakeCore(CoreClient):
    """Raises ``error`` while set, else records the call the Core would get."""

    def __init__(self) -> None:
        super().__init__("clara-core", "ns")
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.error: Exception | None = GetTimeoutError("Core did not answer in 60 s")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        self.calls.append((method, args, kwargs))
        return None


_UNSET_STOP = {
    "message": None,
    "started_at": None,
    "node_id": None,
    "node_ip": None,
    "gpu_ids": None,
    "run": None,
}


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[ReportOutbox]:
    box = ReportOutbox(tmp_path / "state" / "runner-outbox.db")
    yield box
    box.close()


def test_undelivered_reports_are_delivered_in_order_once_the_core_answers(
    outbox: ReportOutbox,
) -> None:
    core = FakeCore()
    outbox.add(
        "j1", Report.OPERATOR_STOPPED, ("j1", "only"), {"status": "Healthy", "ended_at": 2.0}
    )
    outbox.add("j1", Report.JOB_STOPPED, ("j1", "Healthy", None), {})
    assert outbox.deliver(core) == 0  # still unreachable: kept
    assert outbox.holds("j1") and outbox.final_reports() == {"j1"}
    core.error = None
    assert outbox.deliver(core) == 2
    assert core.calls == [
        ("operator_stopped", ("j1", "only"), {**_UNSET_STOP, "status": "Healthy", "ended_at": 2.0}),
        ("job_stopped", ("j1", "Healthy", None, None), {}),
    ]
    assert not outbox.holds("j1") and outbox.final_reports() == set()
    assert outbox.deliver(core) == 0


def test_held_reports_survive_a_restart_of_the_host(tmp_path: Path) -> None:
    path = tmp_path / "runner-outbox.db"
    first = ReportOutbox(path)
    first.add("j1", Report.JOB_STOPPED, ("j1", "Healthy", None), {})
    first.close()
    again = ReportOutbox(path)
    try:
        assert again.final_reports() == {"j1"}
        core = FakeCore()
        core.error = None
        assert again.deliver(core) == 1
        assert core.calls == [("job_stopped", ("j1", "Healthy", None, None), {})]
    finally:
        again.close()


def test_a_report_the_core_refuses_is_removed_and_the_next_delivered(
    outbox: ReportOutbox,
) -> None:
    outbox.add("gone", Report.JOB_STOPPED, ("gone", "Healthy", None), {})
    outbox.add("j2", Report.JOB_STOPPED, ("j2", "Healthy", None), {})
    delivered: list[str] = []

    class Refusing(FakeCore):
        def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
            if args[0] == "gone":
                raise NotFoundError("job 'gone' does not exist")
            delivered.append(args[0])

    assert outbox.deliver(Refusing()) == 1
    assert delivered == ["j2"] and outbox.final_reports() == set()


def test_one_jobs_undeliverable_report_does_not_hold_back_another_jobs(
    outbox: ReportOutbox,
) -> None:
    outbox.add("j1", Report.JOB_STOPPED, ("j1", "Healthy", None), {})
    outbox.add("j2", Report.JOB_STOPPED, ("j2", "Healthy", None), {})

    class Slow(FakeCore):
        def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
            if args[0] == "j1":
                raise GetTimeoutError("slow")

    assert outbox.deliver(Slow()) == 1
    assert outbox.final_reports() == {"j1"}


def runner(outbox: ReportOutbox, core: FakeCore) -> JobRun:
    config = RunnerConfig(
        job_id="j1",
        job_name="job-1",
        pipeline="p",
        definition="",
        payload_id="pay",
        parameters={},
        storage_uri="/nowhere",
        namespace="ns",
        core_name="clara-core",
        report_retry_seconds=0.1,
    )
    run = JobRun(config, host=None, metrics=RunnerMetrics(), outbox=outbox)
    run._core = core
    return run


def test_runner_keeps_a_report_the_core_did_not_take_and_the_ones_after_it(
    outbox: ReportOutbox,
) -> None:
    core = FakeCore()
    run = runner(outbox, core)
    run._report(CoreClient.operator_stopped, "j1", "only", status="Healthy", ended_at=2.0)
    core.error = None  # reachable again, but a report is held: the next ones queue behind it
    run._report(CoreClient.job_stopped, "j1", "Healthy", None)
    assert core.calls == []
    assert outbox.final_reports() == {"j1"}
    assert outbox.deliver(core) == 2
    assert [c[0] for c in core.calls] == ["operator_stopped", "job_stopped"]
    run._report(CoreClient.job_warning, "j1", "late")  # nothing held: straight to the Core
    assert core.calls[-1] == ("job_warning", ("j1", "late", None), {})


def test_runner_raises_a_report_the_core_refuses(outbox: ReportOutbox) -> None:
    core = FakeCore()
    core.error = NotFoundError("job 'j1' does not exist")
    with pytest.raises(NotFoundError, match="does not exist"):
        runner(outbox, core)._report(CoreClient.job_stopped, "j1", "Healthy", None)
    assert not outbox.holds("j1")


def test_a_held_final_report_belongs_to_its_run(outbox: ReportOutbox) -> None:
    """An evicted run's final report waiting for the Core does not stop the next run."""
    outbox.add("j1", Report.JOB_STOPPED, ("j1", "Canceled", None), {"run": 1})
    assert outbox.holds_final_report("j1", 1)
    assert not outbox.holds_final_report("j1", 2)
    outbox.add("j2", Report.JOB_STOPPED, ("j2", "Healthy", None), {})  # kept before runs
    assert outbox.holds_final_report("j2", 1) and outbox.holds_final_report("j2", 5)
