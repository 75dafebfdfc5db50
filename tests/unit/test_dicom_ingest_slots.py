"""Durable stores through slots: one fsync per instance, and exact recovery after a crash."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clara_ray.dicom.part10 import file_preamble_and_meta
from clara_ray.dicom.spool import GroupHolds, SlotPool, Spool
from clara_ray.dicom.spool.slots import (
    SLOT_MAGIC,
    meta_sop_instance,
    read_slot_record,
    slot_record,
)

STUDY = "1.2.826.0.1.3680043.8.498.7"
ROOT = Path(__file__).resolve().parents[2]
CT = "1.2.840.10008.5.1.4.1.1.2"


def _part10(sop: str, body: bytes) -> bytes:
    return file_preamble_and_meta(CT, sop, "1.2.840.10008.1.2.1", "SENDER") + body


def _sop(i: int) -> str:
    return f"1.2.3.{i}"


def _data(i: int, size: int = 3000) -> bytes:
    return _part10(_sop(i), (f"instance {i} ".encode() * size)[:size])


def _store(spool: Spool, slots: SlotPool, holds: GroupHolds, i: int, size: int = 3000) -> bool:
    data = _data(i, size)
    temp = spool.create_temp("CLARA", unplaced=not holds, slots=slots)
    os.write(temp.fd, data)
    body = len(data) - len(file_preamble_and_meta(CT, _sop(i), "1.2.840.10008.1.2.1", "SENDER"))
    return spool.store_temp(temp, "study", STUDY, _sop(i), body, holds=holds, slots=slots)


def _group(spool: Spool) -> Path:
    return spool.incoming / "CLARA" / f"study-{STUDY}"


def _slots_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".slot"))


def _quiet(slots: SlotPool) -> None:
    for group in slots._groups.values():
        group._join()  # a batch of slots still being created ahead


def _drop_without_settling(holds: GroupHolds, slots: SlotPool) -> None:
    """What a killed receiver leaves: its locks gone, its slots where they are."""
    _quiet(slots)  # a dead process creates nothing more
    holds.release()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_a_durable_store_fsyncs_one_file_per_instance(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots, holds = SlotPool(), GroupHolds()
    assert _store(spool, slots, holds, 0)  # creates the folders and the first batch
    files, folders = [], []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        (folders if stat.S_ISDIR(os.fstat(fd).st_mode) else files).append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    for i in range(1, 41):
        assert _store(spool, slots, holds, i)
    slots.settle()
    holds.release()
    assert len(files) == 40  # one per instance: its slot
    assert 1 <= len(folders) <= 6  # one per batch of slots (8, 16, 32...) and one at the end
    group = _group(spool)
    assert _slots_in(group) == []
    stored = spool.files(group)
    assert [p.name for p in stored] == sorted(f"{_sop(i)}.dcm" for i in range(41))
    for path in stored:
        raw = path.read_bytes()
        i = int(path.name.split(".")[3])
        assert raw == _data(i)  # as received; the record was zeroed once the name was durable


def test_instances_after_the_first_stream_straight_into_a_slot(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    first = spool.create_temp("CLARA", unplaced=True, slots=slots)
    assert first.slots is None and first.name.endswith(".unplaced.tmp")
    first.discard()
    assert _store(spool, slots, holds, 1)
    second = spool.create_temp("CLARA", unplaced=False, slots=slots)
    try:
        assert second.slots is slots.current and second.name.endswith(".slot")
        assert (_group(spool) / second.name).is_file()
    finally:
        second.discard()
    assert not (_group(spool) / second.name).exists()
    slots.settle()
    holds.release()


def test_a_duplicate_through_a_slot_is_stored_once(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    assert _store(spool, slots, holds, 1)
    assert _store(spool, slots, holds, 1) is False
    assert _store(spool, slots, holds, 1, size=2000) is True  # another size: replaced
    slots.settle()
    holds.release()
    (path,) = spool.files(_group(spool))
    assert path.read_bytes()[128:] == _data(1, 2000)[128:]
    assert _slots_in(_group(spool)) == []


def test_a_slot_cut_short_mid_write_is_removed_on_recovery(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    assert _store(spool, slots, holds, 1)
    group = _group(spool)
    arriving = spool.create_temp("CLARA", unplaced=False, slots=slots)  # a free slot
    os.write(arriving.fd, _data(2)[:1500])  # the writer dies mid-write: no record
    cut = group / slots.current.take()  # type: ignore[union-attr]
    data = _data(3)
    cut.write_bytes(slot_record(len(data)) + data[24:2000])  # a record, but bytes missing
    os.close(arriving.fd)
    _drop_without_settling(holds, slots)
    assert len(_slots_in(group)) > 2
    (open_group,) = spool.open_groups()
    assert open_group.files == 1 and not open_group.held
    assert _slots_in(group) == []
    assert [p.name for p in spool.files(group)] == [f"{_sop(1)}.dcm"]


def test_a_complete_slot_whose_name_was_lost_is_named_again(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    for i in range(3):
        assert _store(spool, slots, holds, i)
    group = _group(spool)
    (group / f"{_sop(1)}.dcm").unlink()  # a power failure before the folder's next fsync
    _drop_without_settling(holds, slots)
    (open_group,) = spool.open_groups()
    assert open_group.files == 3
    assert _slots_in(group) == []
    assert (group / f"{_sop(1)}.dcm").read_bytes() == _data(1)


def test_recovery_replaces_a_stored_copy_of_another_size(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    assert _store(spool, slots, holds, 1)
    group = _group(spool)
    name = group / f"{_sop(1)}.dcm"
    name.unlink()
    name.write_bytes(_data(1, 100))  # the older copy, cut short, the rename over it lost
    _drop_without_settling(holds, slots)
    spool.open_groups()
    assert name.read_bytes()[128:] == _data(1)[128:]
    assert _slots_in(group) == []


def test_a_held_groups_slots_are_left_alone(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    for i in range(2):
        assert _store(spool, slots, holds, i)
    group = _group(spool)
    (group / f"{_sop(1)}.dcm").unlink()
    _quiet(slots)
    before = _slots_in(group)
    assert before
    (open_group,) = spool.open_groups()
    assert open_group.held and open_group.files == 1
    assert _slots_in(group) == before  # a live writer's slots: not recovered under it
    assert spool.close_group(open_group, time.time()) is None
    slots.settle()
    holds.release()


def test_closing_names_a_dead_writers_instances_first(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    for i in range(2):
        assert _store(spool, slots, holds, i)
    group = _group(spool)
    open_group = spool.open_groups()[0]
    (group / f"{_sop(0)}.dcm").unlink()
    _drop_without_settling(holds, slots)
    closing = spool.close_group(open_group, time.time())
    assert closing is not None
    assert [p.name for p in spool.files(closing.path)] == [f"{_sop(i)}.dcm" for i in range(2)]
    assert _slots_in(closing.path) == []


def test_slots_in_a_closed_folder_are_recovered_before_ingest(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    for i in range(2):
        assert _store(spool, slots, holds, i)
    group = _group(spool)
    (group / f"{_sop(1)}.dcm").unlink()
    _drop_without_settling(holds, slots)
    target = spool.closing / "CLARA" / f"study-{STUDY}-1000"
    target.parent.mkdir(parents=True)
    group.rename(target)  # closed before recovery ran (its names lost by a power failure)
    (closing,) = spool.closing_groups()
    assert [p.name for p in spool.files(closing.path)] == [f"{_sop(i)}.dcm" for i in range(2)]
    assert _slots_in(closing.path) == []


def test_slot_records_are_checked() -> None:
    record = slot_record(1234)
    assert record.startswith(SLOT_MAGIC) and len(record) <= 128
    assert read_slot_record(record + b"\x00" * 60) == 1234
    assert read_slot_record(b"\x00" * 128) is None
    assert read_slot_record(record[:20]) is None
    assert meta_sop_instance(_data(5)) == _sop(5)
    assert meta_sop_instance(b"\x00" * 300) is None


def test_a_slot_holds_its_record_until_its_name_is_durable(spool: Spool) -> None:
    slots, holds = SlotPool(), GroupHolds()
    assert _store(spool, slots, holds, 1)
    group = _group(spool)
    raw = (group / f"{_sop(1)}.dcm").read_bytes()
    assert read_slot_record(raw) == len(raw) and raw[128:] == _data(1)[128:]
    slots.settle()
    holds.release()
    assert (group / f"{_sop(1)}.dcm").read_bytes() == _data(1)


def test_a_killed_writer_loses_no_acknowledged_instance(spool: Spool) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from tests.unit.test_dicom_ingest_slots import _store
        from clara_ray.dicom.spool import GroupHolds, SlotPool, Spool
        spool, slots, holds = Spool(Path({str(spool.root)!r})), SlotPool(), GroupHolds()
        for i in range(20):
            assert _store(spool, slots, holds, i)
        temp = spool.create_temp("CLARA", unplaced=False, slots=slots)
        os.write(temp.fd, b"half an instance")
        print("stored", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "stored"
        group = _group(spool)
        assert _slots_in(group)  # the dead writer's used and free slots stay behind
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        (open_group,) = spool.open_groups()
        assert open_group.files == 20 and not open_group.held
        assert _slots_in(group) == []
        for i in range(20):
            assert (group / f"{_sop(i)}.dcm").read_bytes() == _data(i)
    finally:
        proc.kill()
        proc.wait(timeout=30)
