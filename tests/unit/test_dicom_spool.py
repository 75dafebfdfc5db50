"""The receive spool: layout, durability protocol, duplicates, closing races, recovery."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from clara_ray.dicom.part10 import file_preamble_and_meta
from clara_ray.dicom.spool import ClosingGroup, GroupHolds, Spool
from clara_ray.dicom.spool import store as store_module
from clara_ray.dicom.spool.names import aet_folder

STUDY = "1.2.826.0.1.3680043.8.498.1"
ROOT = Path(__file__).resolve().parents[2]


def _blob(i: int) -> bytes:
    return b"\x00" * 128 + b"DICM" + f"instance {i}".encode() * 100


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_store_writes_the_layout_and_the_bytes(spool: Spool) -> None:
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1)) is True
    path = spool.root / "incoming" / "CLARA" / f"study-{STUDY}" / "1.2.3.1.dcm"
    assert path.read_bytes() == _blob(1)
    assert _temp_files(spool.root) == []


def test_duplicate_is_stored_once_and_not_overwritten(spool: Spool) -> None:
    assert spool.store("CLARA", "series", STUDY, "1.2.3.1", _blob(1)) is True
    assert spool.store("CLARA", "series", STUDY, "1.2.3.1", _blob(2)) is False
    (group,) = spool.open_groups()
    assert group.files == 1
    assert spool.files(group.path)[0].read_bytes() == _blob(1)


def _part10(sop: str, source_ae: str, dataset: bytes) -> bytes:
    return file_preamble_and_meta("1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2.1",
                                  source_ae) + dataset  # fmt: skip


def test_the_same_data_set_from_another_sender_is_a_duplicate(spool: Spool) -> None:
    first = _part10("1.2.3.1", "CT", b"\x08\x00" * 500)
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", first) is True
    again = _part10("1.2.3.1", "A_LONGER_SENDER", b"\x08\x00" * 500)
    assert len(again) != len(first)
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", again) is False
    (group,) = spool.open_groups()
    assert spool.files(group.path)[0].read_bytes() == first


def test_a_stored_copy_cut_short_is_replaced(spool: Spool) -> None:
    data = _part10("1.2.3.1", "CT", b"\x08\x00" * 500)
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", data, durable=False) is True
    (group,) = spool.open_groups()
    stored = spool.files(group.path)[0]
    os.truncate(stored, 300)  # what a power failure before the sync can leave behind
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", data, durable=False) is True
    assert stored.read_bytes() == data
    os.truncate(stored, 100)  # not even its file meta header
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", data) is True
    assert stored.read_bytes() == data
    assert _temp_files(spool.root) == []


def test_a_store_that_is_not_durable_fsyncs_nothing_until_sync(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool.store("CLARA", "study", STUDY, "1.2.3.0", _blob(0))  # creates the group's folders
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1), durable=False) is True
    assert calls == []
    assert spool.store("CLARA", "study", STUDY, "1.2.3.2", _blob(2)) is True
    assert len(calls) == 2  # the file, then its folder
    spool.sync()
    (group,) = spool.open_groups()
    assert group.files == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("CLARA", "study", "../../etc", "1.2"), "group_uid must be 1-64 digits and dots"),
        (("CLARA", "study", "1.2", "1.2/../x"), "sop_instance_uid must be 1-64 digits and dots"),
        (("CLARA", "study", "1" * 65, "1.2"), "group_uid must be 1-64 digits and dots"),
        (("CLARA", "patient", "1.2", "1.2"), "grouping must be one of"),
        (("", "study", "1.2", "1.2"), "AE title '' must be 1 to 16"),
        (("A\\B", "study", "1.2", "1.2"), "without a backslash"),
        (("X" * 17, "study", "1.2", "1.2"), "must be 1 to 16"),
    ],
)
def test_invalid_names_never_reach_the_filesystem(
    spool: Spool, args: tuple[str, str, str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        spool.store(*args, b"data")
    assert list((spool.root / "incoming").iterdir()) == []


def test_ae_titles_are_escaped_into_folder_names(spool: Spool) -> None:
    assert aet_folder("CT/1 .A%") == "CT%2F1%20%2EA%25"
    spool.store("CT/1 .A%", "study", STUDY, "1.2.3", _blob(1))
    (group,) = spool.open_groups()
    assert group.called_ae == "CT/1 .A%"
    assert group.path.parent == spool.root / "incoming" / "CT%2F1%20%2EA%25"


def test_open_groups_report_activity_and_counts(spool: Spool) -> None:
    before = time.time()
    for i in range(3):
        spool.store("CLARA", "study", STUDY, f"1.2.3.{i}", _blob(i))
    spool.store("OTHER", "series", "1.2.9", "1.2.3.9", _blob(9))
    groups = spool.open_groups()
    assert [(g.called_ae, g.grouping, g.group_uid, g.files) for g in groups] == [
        ("CLARA", "study", STUDY, 3),
        ("OTHER", "series", "1.2.9", 1),
    ]
    assert all(before - 1 <= g.last_activity <= time.time() + 1 for g in groups)


def test_temp_files_are_ignored_and_stale_ones_cleaned(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", stale_temp_seconds=60)
    spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1))
    folder = spool.root / "incoming" / "CLARA" / f"study-{STUDY}"
    fresh = folder / ".1.2.3.2.dcm.aaaa.tmp"
    stale = folder / ".1.2.3.3.dcm.bbbb.tmp"
    fresh.write_bytes(b"partial")
    stale.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (group,) = Spool(tmp_path / "spool", stale_temp_seconds=60).open_groups()  # a restart
    assert group.files == 1
    assert fresh.exists() and not stale.exists()
    assert [p.name for p in spool.files(group.path)] == ["1.2.3.1.dcm"]


def test_stale_empty_group_folders_are_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", stale_temp_seconds=60)
    empty = spool.root / "incoming" / "CLARA" / "study-1.2.3"
    empty.mkdir(parents=True)
    assert spool.open_groups() == []
    assert empty.exists()  # recent: a writer may be about to use it
    old = time.time() - 3600
    os.utime(empty, (old, old))
    assert spool.open_groups() == []
    assert not empty.exists()


def test_close_group_renames_atomically_and_lists_closing(spool: Spool) -> None:
    for i in range(2):
        spool.store("CLARA", "study", STUDY, f"1.2.3.{i}", _blob(i))
    (group,) = spool.open_groups()
    closing = spool.close_group(group, 1700000000.1234)
    assert closing == ClosingGroup(
        called_ae="CLARA",
        grouping="study",
        group_uid=STUDY,
        closed_at=1700000000.123,
        path=spool.root / "closing" / "CLARA" / f"study-{STUDY}-1700000000123",
        key=f"study-{STUDY}-1700000000123",
    )
    assert spool.open_groups() == []
    assert spool.closing_groups() == [closing]
    assert [p.name for p in spool.files(closing.path)] == ["1.2.3.0.dcm", "1.2.3.1.dcm"]
    assert spool.close_group(group, 1700000001.0) is None  # vanished
    spool.remove(closing)
    spool.remove(closing)  # idempotent
    assert spool.closing_groups() == []


def test_store_after_close_opens_a_fresh_group(spool: Spool) -> None:
    spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1))
    (group,) = spool.open_groups()
    closing = spool.close_group(group, time.time())
    assert closing is not None
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1)) is True  # new group
    (reopened,) = spool.open_groups()
    assert reopened.files == 1


def test_writer_whose_folder_is_closed_mid_store_stores_again(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool.store("CLARA", "study", STUDY, "1.2.3.0", _blob(0))
    (group,) = spool.open_groups()
    closed: list[ClosingGroup] = []
    real_write_temp = store_module.write_temp

    def write_then_close(dfd: int, name: str, data: bytes, durable: bool) -> str:
        temp = real_write_temp(dfd, name, data, durable)
        if not closed:  # the closer renames the folder while this writer holds its temp file
            closing = spool.close_group(group, time.time())
            assert closing is not None
            closed.append(closing)
        return temp

    monkeypatch.setattr(store_module, "write_temp", write_then_close)
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1)) is True
    (reopened,) = spool.open_groups()
    assert [p.name for p in spool.files(reopened.path)] == ["1.2.3.1.dcm"]
    (closing,) = spool.closing_groups()
    assert [p.name for p in closing.path.iterdir()] == ["1.2.3.0.dcm"]  # exactly one group


def test_closing_while_writing_loses_and_duplicates_nothing(spool: Spool) -> None:
    stop = threading.Event()
    closed: list[ClosingGroup] = []

    def closer() -> None:
        while not stop.is_set():
            for group in spool.open_groups():
                closing = spool.close_group(group, time.time())
                if closing is not None:
                    closed.append(closing)

    def writer(first: int) -> None:
        for i in range(first, first + 40):
            assert spool.store("CLARA", "study", STUDY, f"1.2.3.{i}", _blob(i)) is True

    thread = threading.Thread(target=closer)
    thread.start()
    writers = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    thread.join()
    names = [p.name for c in spool.closing_groups() for p in spool.files(c.path)]
    names += [p.name for g in spool.open_groups() for p in spool.files(g.path)]
    assert len(closed) > 1
    assert sorted(names) == sorted(f"1.2.3.{k * 100 + i}.dcm" for k in range(4) for i in range(40))


def test_many_threads_store_each_instance_once(spool: Spool) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def sender() -> None:
        for i in range(20):
            stored = spool.store("CLARA", "study", STUDY, f"1.2.3.{i}", _blob(i))
            with lock:
                results.append(stored)

    threads = [threading.Thread(target=sender) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 20
    (group,) = spool.open_groups()
    assert group.files == 20
    assert _temp_files(spool.root) == []
    for path in spool.files(group.path):
        assert path.read_bytes() == _blob(int(path.name.split(".")[3]))


def test_many_processes_store_each_instance_once(spool: Spool) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from clara_ray.dicom.spool import Spool
        spool = Spool(Path({str(spool.root)!r}))
        stored = sum(
            spool.store("CLARA", "study", {STUDY!r}, f"1.2.3.{{i}}", b"x" * 100000)
            for i in range(30)
        )
        print(stored)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(out) for out in outputs) == 30
    (group,) = spool.open_groups()
    assert group.files == 30


def test_disk_full_leaves_no_partial_file(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space left"):
        spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1))
    monkeypatch.undo()
    assert spool.open_groups() == []
    assert _temp_files(spool.root) == []


def test_recovery_lists_the_same_groups(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    first.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1))
    first.store("CLARA", "study", "1.2.4", "1.2.4.1", _blob(2))
    (one,) = [g for g in first.open_groups() if g.group_uid == STUDY]
    closing = first.close_group(one, 1700000000.0)
    again = Spool(tmp_path / "spool")
    assert [g.group_uid for g in again.open_groups()] == ["1.2.4"]
    assert again.closing_groups() == [closing]


def test_foreign_folders_are_ignored(spool: Spool) -> None:
    (spool.root / "incoming" / "bad name!").mkdir()
    (spool.root / "incoming" / "CLARA" / "not-a-group").mkdir(parents=True)
    (spool.root / "closing" / "CLARA" / "study-1.2-notms").mkdir(parents=True)
    assert spool.open_groups() == []
    assert spool.closing_groups() == []


def test_free_bytes_is_positive(spool: Spool) -> None:
    assert spool.free_bytes() > 0


def test_a_group_held_by_an_open_association_does_not_close(spool: Spool) -> None:
    holds = GroupHolds()
    assert spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1), holds=holds) is True
    assert spool.store("CLARA", "study", STUDY, "1.2.3.2", _blob(2), holds=holds) is True
    old = time.time() - 3600
    folder = spool.root / "incoming" / "CLARA" / f"study-{STUDY}"
    for path in (folder, *folder.iterdir()):
        os.utime(path, (old, old))  # quiet for an hour, but the association is still open
    (group,) = spool.open_groups()
    assert group.held and group.files == 2
    assert spool.close_group(group, time.time()) is None
    assert spool.open_groups()[0].path == folder

    released_at = time.time()
    holds.release()
    (group,) = spool.open_groups()
    assert not group.held
    assert group.last_activity >= released_at - 1  # the quiet time starts at the release
    closing = spool.close_group(group, time.time())
    assert closing is not None
    assert [p.name for p in spool.files(closing.path)] == ["1.2.3.1.dcm", "1.2.3.2.dcm"]


def test_an_association_holds_only_the_groups_it_stored_into(spool: Spool) -> None:
    holds = GroupHolds()
    spool.store("CLARA", "series", "1.2.1", "1.2.3.1", _blob(1), holds=holds)
    spool.store("CLARA", "series", "1.2.2", "1.2.3.2", _blob(2))
    assert [(g.group_uid, g.held) for g in spool.open_groups()] == [
        ("1.2.1", True),
        ("1.2.2", False),
    ]
    holds.release()
    holds.release()  # idempotent
    assert [g.held for g in spool.open_groups()] == [False, False]


def test_a_killed_receiver_holds_no_group(spool: Spool) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from clara_ray.dicom.spool import GroupHolds, Spool
        holds = GroupHolds()
        Spool(Path({str(spool.root)!r})).store(
            "CLARA", "study", {STUDY!r}, "1.2.3.1", b"x" * 1000, holds=holds
        )
        print("stored", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "stored\n"
        (group,) = spool.open_groups()
        assert group.held  # held by another process
        proc.kill()
        proc.wait(timeout=30)
        (group,) = spool.open_groups()
        assert not group.held  # the kernel dropped the dead process's lock
        assert spool.close_group(group, time.time()) is not None
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_an_instance_still_arriving_keeps_its_ae_titles_groups_active(spool: Spool) -> None:
    spool.store("CLARA", "study", STUDY, "1.2.3.1", _blob(1))
    spool.store("OTHER", "study", STUDY, "1.2.3.1", _blob(1))
    old = time.time() - 3600
    for folder in (spool.root / "incoming").glob("*/study-*"):
        for path in (folder, *folder.iterdir()):
            os.utime(path, (old, old))
    placed = spool.create_temp("CLARA", unplaced=False)  # its association holds its group
    os.write(placed.fd, b"part of an instance")
    assert all(g.last_activity <= old + 1 for g in spool.open_groups())

    arriving = spool.create_temp("CLARA", unplaced=True)  # its group is not known yet
    os.write(arriving.fd, b"part of an instance")
    by_ae = {g.called_ae: g for g in spool.open_groups()}
    assert by_ae["CLARA"].last_activity >= time.time() - 60
    assert by_ae["OTHER"].last_activity <= old + 1
    for temp in (placed, arriving):
        temp.discard()
    assert _temp_files(spool.root) == []
    assert all(g.last_activity <= old + 1 for g in spool.open_groups())


def test_a_streamed_temp_file_is_stored_into_its_group(spool: Spool) -> None:
    data = _blob(7)
    temp = spool.create_temp("CLARA", unplaced=True)
    os.write(temp.fd, data)
    temp.finish(durable=True)
    holds = GroupHolds()
    assert spool.store_temp(temp, "study", STUDY, "1.2.3.7", len(data), holds=holds) is True
    (group,) = spool.open_groups()
    assert group.held and [p.read_bytes() for p in spool.files(group.path)] == [data]
    assert _temp_files(spool.root) == []
    holds.release()
