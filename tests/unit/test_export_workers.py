"""Export scheduling (clara_ray.export.workers): bounds, fairness, wake-ups, leases.

The scheduler runs against scripted claims and sends (no Core, no network), and
against a real CoreService for what the Core's claim must do for it (claim by
destination, resent exports).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clara_ray.config.dicom import ExportSettings
from clara_ray.contracts.records import ExportRecord, ExportState
from clara_ray.core import CoreService, SQLiteStore
from clara_ray.export.workers import ExportScheduler
from clara_ray.storage import Storage
from tests.launchers import NoRunners

DEADLINE_S = 5.0


@dataclass
class Record:
    export_id: str


def settings(**values: Any) -> ExportSettings:
    return ExportSettings(**{"workers": 8, "concurrency_per_destination": 2, **values})


class Script:
    """Exports queued per destination; sends to a destination in ``stuck`` block until released."""

    def __init__(self, queued: dict[str, int], stuck: tuple[str, ...] = ()) -> None:
        self.queues = {
            name: deque(f"{name}-{i}" for i in range(count)) for name, count in queued.items()
        }
        self.stuck = set(stuck)
        self.release = threading.Event()
        self.claims: list[str] = []
        self.leases: list[tuple[str, float]] = []
        self.finished: dict[str, dict[str, Any]] = {}
        self.sending: set[str] = set()
        self.lock = threading.Lock()

    def claim(self, destination: str, lease_seconds: float) -> dict[str, Any] | None:
        self.claims.append(destination)
        queue = self.queues.get(destination)
        if not queue:
            return None
        return {"export": Record(queue.popleft()), "destination": {"name": destination}}

    def send(self, claimed: dict[str, Any], lease_end: float) -> dict[str, Any]:
        export_id = claimed["export"].export_id
        with self.lock:
            self.sending.add(export_id)
            self.leases.append((export_id, lease_end))
        if claimed["destination"]["name"] in self.stuck:
            self.release.wait(30)
        with self.lock:
            self.sending.discard(export_id)
        return {"ok": True, "sent": 1}

    def finish(self, claimed: dict[str, Any], outcome: dict[str, Any]) -> None:
        with self.lock:
            self.finished[claimed["export"].export_id] = outcome


@pytest.fixture
def made() -> Iterator[list[tuple[ExportScheduler, Script]]]:
    """Schedulers made by a test; their stuck sends are released and their pools closed."""
    made: list[tuple[ExportScheduler, Script]] = []
    yield made
    for scheduler, script in made:
        script.release.set()
        scheduler.close()
        wait_until(lambda s=scheduler: not s.in_flight(), "the sends to end")


def scheduler_for(made: list, script: Script, **values: Any) -> ExportScheduler:
    scheduler = ExportScheduler(script.claim, script.send, script.finish, settings(**values))
    made.append((scheduler, script))
    return scheduler


def wait_until(predicate: Any, what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_a_stuck_destination_does_not_hold_up_the_others(made) -> None:
    script = Script({"MUTE": 3, "PACS": 3, "RESEARCH": 1}, stuck=("MUTE",))
    scheduler = scheduler_for(made, script)
    others = {"PACS-0", "PACS-1", "PACS-2", "RESEARCH-0"}

    def delivered() -> bool:
        scheduler.dispatch(["MUTE", "PACS", "RESEARCH"])
        return set(script.finished) == others

    wait_until(delivered, "the working destinations' exports")
    assert scheduler.in_flight() == {"MUTE": 2}
    assert script.sending == {"MUTE-0", "MUTE-1"}
    assert script.queues["MUTE"] == deque(["MUTE-2"])


def test_sends_to_one_destination_never_exceed_its_bound(made) -> None:
    script = Script({"PACS": 10}, stuck=("PACS",))
    scheduler = scheduler_for(made, script, concurrency_per_destination=3)

    assert scheduler.dispatch(["PACS"]) == 3
    assert scheduler.dispatch(["PACS"]) == 0

    wait_until(lambda: len(script.sending) == 3, "three sends")
    assert scheduler.in_flight() == {"PACS": 3}
    assert script.claims == ["PACS"] * 3  # a full destination is not asked for more
    assert len(script.queues["PACS"]) == 7


def test_the_overall_bound_caps_every_destination_together(made) -> None:
    names = [f"D{i}" for i in range(5)]
    script = Script(dict.fromkeys(names, 4), stuck=tuple(names))
    scheduler = scheduler_for(made, script, workers=3, concurrency_per_destination=2)

    assert scheduler.dispatch(names) == 3

    wait_until(lambda: len(script.sending) == 3, "three sends")
    assert sum(scheduler.in_flight().values()) == 3
    assert max(scheduler.in_flight().values()) == 1  # one export each per round
    assert scheduler.dispatch(names) == 0


def test_destinations_take_turns_at_the_first_free_worker(made) -> None:
    script = Script({"A": 20, "B": 20, "C": 20})
    scheduler = scheduler_for(made, script, workers=1, concurrency_per_destination=1)
    first = []
    for _ in range(6):
        scheduler.dispatch(["A", "B", "C"])
        first.append(script.claims[-1])
        wait_until(lambda: not scheduler.in_flight(), "the send to end")
    assert set(first) == {"A", "B", "C"}


def test_a_freed_slot_is_claimed_without_waiting_for_the_period(made) -> None:
    script = Script({"PACS": 2}, stuck=("PACS",))
    scheduler = scheduler_for(made, script, concurrency_per_destination=1)
    runner = threading.Thread(target=scheduler.run, args=(lambda: ["PACS"], 60.0), daemon=True)
    runner.start()
    wait_until(lambda: script.sending == {"PACS-0"}, "the first send")

    script.stuck.clear()
    script.release.set()

    wait_until(lambda: "PACS-1" in script.finished, "the second export", timeout=2.0)
    scheduler.close()
    runner.join(DEADLINE_S)
    assert not runner.is_alive()


def test_each_send_is_given_the_end_of_its_lease(made) -> None:
    script = Script({"PACS": 1})
    scheduler = scheduler_for(made, script, lease_seconds=900)
    before = time.monotonic()

    scheduler.dispatch(["PACS"])

    wait_until(lambda: script.leases, "the send")
    [(export_id, lease_end)] = script.leases
    assert export_id == "PACS-0"
    assert before + 900 <= lease_end <= time.monotonic() + 900


def test_a_removed_destination_is_still_asked_for(made) -> None:
    script = Script({"OLD": 0, "PACS": 0})
    scheduler = scheduler_for(made, script)
    scheduler.dispatch(["OLD", "PACS"])
    script.claims.clear()

    scheduler.dispatch(["PACS"])

    assert sorted(script.claims) == ["OLD", "PACS"]


def test_a_failing_send_is_recorded_as_failed_and_frees_its_slot(made, caplog) -> None:
    script = Script({"PACS": 2})

    def broken(claimed: dict[str, Any], lease_end: float) -> dict[str, Any]:
        raise KeyError("files")

    scheduler = ExportScheduler(script.claim, broken, script.finish, settings())
    made.append((scheduler, script))
    scheduler.dispatch(["PACS"])

    wait_until(lambda: len(script.finished) == 2, "both outcomes")
    outcome = script.finished["PACS-0"]
    assert outcome["ok"] is False and outcome["retry_in"] is None
    assert "destination 'PACS'" in outcome["reason"] and "KeyError" in outcome["reason"]
    assert not scheduler.in_flight()
    assert "export PACS-0 to destination 'PACS': the send failed" in caplog.text


# -- against the Core's claim -----------------------------------------------------------


@pytest.fixture
def core(tmp_path: Path) -> Iterator[CoreService]:
    store = SQLiteStore(tmp_path / "clara.db")
    service = CoreService(store, Storage(str(tmp_path / "storage")), NoRunners())
    for name, port in (("MUTE", 4242), ("PACS", 4243)):
        service.dicom.dicom_put(
            "destination", {"name": name, "ae_title": name, "host": "127.0.0.1", "port": port}
        )
    yield service
    store.close()


def put_export(core: CoreService, export_id: str, destination: str) -> None:
    now = time.time()
    core.store.put_export(
        ExportRecord(
            export_id=export_id,
            job_id="job-1",
            operator="export",
            destination=destination,
            files=["seg/seg.dcm"],
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
        )
    )


def test_the_core_hands_a_destination_only_its_own_exports(core: CoreService) -> None:
    put_export(core, "to-mute", "MUTE")
    put_export(core, "to-pacs", "PACS")

    claimed = core.exports.claim_export("w", 600, destination="PACS")

    assert claimed is not None and claimed["export"].export_id == "to-pacs"
    assert claimed["destination"]["name"] == "PACS"
    assert core.exports.claim_export("w", 600, destination="PACS") is None
    assert core.exports.get_export("to-mute").state is ExportState.PENDING


def test_exports_of_a_deleted_destination_fail_when_it_is_asked_for(core: CoreService) -> None:
    put_export(core, "to-mute", "MUTE")
    core.dicom.dicom_delete("destination", "MUTE")

    assert core.exports.claim_export("w", 600, destination="MUTE") is None

    rec = core.exports.get_export("to-mute")
    assert rec.state is ExportState.FAILED
    assert rec.reason == "destination 'MUTE' was deleted"


def test_a_resent_export_is_claimed_and_sent_again(core: CoreService, made) -> None:
    put_export(core, "to-pacs", "PACS")
    sent: list[str] = []

    def send(claimed: dict[str, Any], lease_end: float) -> dict[str, Any]:
        sent.append(claimed["export"].export_id)
        if len(sent) == 1:
            return {"ok": False, "reason": "refused for good", "retry_in": None}
        return {"ok": True, "sent": 1}

    def finish(claimed: dict[str, Any], outcome: dict[str, Any]) -> None:
        core.exports.export_finished(claimed["export"].export_id, **outcome)

    scheduler = ExportScheduler(
        lambda name, lease: core.exports.claim_export("w", lease, destination=name),
        send,
        finish,
        settings(),
    )
    made.append((scheduler, Script({})))
    scheduler.dispatch(["MUTE", "PACS"])
    wait_until(
        lambda: core.exports.get_export("to-pacs").state is ExportState.FAILED, "the failure"
    )

    core.exports.resend_export("to-pacs")
    scheduler.dispatch(["MUTE", "PACS"])

    wait_until(
        lambda: core.exports.get_export("to-pacs").state is ExportState.SUCCEEDED, "the resend"
    )
    assert sent == ["to-pacs", "to-pacs"]
