"""Exports to a PACS that never answers do not hold up exports to a working one (Orthanc 1.10)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clara_ray.config.dicom import DestinationConfig, DicomSettings, ExportSettings
from clara_ray.dicom.tls import ClientTls
from clara_ray.export.scu import read_entry
from clara_ray.export.workers import core_exports
from tests.peer.dicom_helpers import write_study
from tests.peer.export_helpers import Bench, black_hole
from tests.peer.orthanc import OrthancServer, orthanc_fixture

pytestmark = pytest.mark.peer

orthanc = orthanc_fixture()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    bench = Bench(tmp_path / "bench")
    yield bench
    bench.close()


def _wait(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_black_holed_pacs_does_not_delay_exports_to_a_working_one(
    bench: Bench, orthanc: OrthancServer, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "study", slices=4)
    settings = DicomSettings(export=ExportSettings(concurrency_per_destination=1))
    with black_hole() as port:
        bench.add_destination(
            DestinationConfig(name="MUTE", ae_title="MUTE", host="127.0.0.1", port=port)
        )
        bench.add_destination(orthanc.destination("PACS"))
        # created first, so one sender taking exports in order would be stuck on it
        bench.add_export("to-mute", "MUTE", study)
        bench.add_export("to-mute-2", "MUTE", study)
        bench.add_export("to-pacs", "PACS", study)
        exports = core_exports(bench, bench.storage, settings, ClientTls(settings.tls), "test")
        runner = threading.Thread(
            target=exports.run, args=(lambda: ["MUTE", "PACS"], 1.0), daemon=True
        )
        runner.start()
        try:
            seconds = _wait(lambda: bench.state("to-pacs") == "Succeeded", 10, "PACS's export")
            assert seconds < 5
            assert orthanc.sop_instance_uids() == {read_entry(f).sop_instance for f in study}
            assert bench.state("to-mute") == "InProgress"  # still waiting for an answer
            assert bench.state("to-mute-2") == "Pending"  # MUTE's one slot is taken
            assert exports.in_flight() == {"MUTE": 1}
        finally:
            exports.close()
    # the black hole is gone: its send ends (aborted, then refused) and is retried later
    _wait(lambda: not exports.in_flight(), 15, "the send to MUTE to end")
    runner.join(5)
    rec = bench.get_export("to-mute")
    assert rec.state == "Pending" and "destination 'MUTE'" in (rec.reason or "")
