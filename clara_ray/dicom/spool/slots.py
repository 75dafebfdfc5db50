"""Slots: durable instances with one fsync each (durability ``instance``).

A durable store needs the file's bytes *and* a directory entry on disk before
its Success status.  Writing a new file and naming it costs two fsyncs (the
file, then its folder: two disk flushes).  A slot needs one:

* An association that stores into a group folder creates a batch of empty
  *slot* files there (``.<random>.slot``) and fsyncs the folder once: their
  entries are durable before any of them holds an instance.
* An instance goes into a free slot (streamed there directly when the
  association's last group is the instance's group, else copied in from its
  temp file in the kernel), followed by a *slot record* in the Part 10
  preamble (the 128 bytes that Part 10 leaves to implementations): a magic and
  the file's total size (the SOP Instance UID is in the File Meta Information
  the receiver wrote).  One ``fsync`` of the slot makes data and record
  durable; the instance's directory entry is the slot's, durable already.
  Only then is the slot hard-linked to ``<sop uid>.dcm`` (the name listings and
  payloads use) and Success sent.
* That second name becomes durable with the folder's next fsync: the next
  batch's, or the one at the association's end.  After it the records of the
  instances it covers are zeroed (stored files keep an all-zero preamble, so no
  copy of them, such as a de-identified one, carries a record) and their slot
  names removed; so are the unused slots at the end.

*Recovery* (:func:`recover`) runs on a folder no live association holds (see
:class:`~clara_ray.dicom.spool.GroupHolds`), under its exclusive ``flock``, and
on closed folders: an empty slot, or one whose record is missing or names
another size (a write or fsync cut short: never acknowledged), is removed; a
complete slot gets its ``<sop uid>.dcm`` name back if a power failure lost it
(or replaces a stored copy of another data set size, as a new store would) and
then loses its slot name.  This relies on the file system committing a file's
size only with its data (ext4 ``data=ordered``, XFS, btrfs: their defaults), so
a record whose size matches the file's proves the bytes before it complete.

A group with slots of a live association is held by it, so it is never closed
or recovered under it; a receiver that dies leaves its slots to recovery, which
:meth:`Spool.open_groups`, :meth:`Spool.close_group` and
:meth:`Spool.closing_groups` run before anything lists or renames the folder.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from pathlib import Path

from clara_ray.dicom.spool.files import META_START, dataset_size, stored_dataset_size, unlink_at
from clara_ray.dicom.spool.names import FILE_NAME, SLOT_SUFFIX, slot_name

__all__ = [
    "GroupSlots",
    "SlotPool",
    "copy_into",
    "read_slot_record",
    "recover",
    "slot_record",
]

log = logging.getLogger("clara_ray.dicom.spool")  # one logger for the whole spool

SLOT_MAGIC = b"CLARA-RAY SLOT 1"
_RECORD = struct.Struct("<16sQ")  # magic, file size
_CLEARED = bytes(_RECORD.size)
_FIRST_BATCH = 8
_MAX_BATCH = 64
_MAX_META = 4096
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"})


def slot_record(file_size: int) -> bytes:
    """The record written into a complete slot's preamble."""
    return _RECORD.pack(SLOT_MAGIC, file_size)


def read_slot_record(head: bytes) -> int | None:
    """The file size in a slot record at the start of ``head``; None if there is none."""
    if len(head) < _RECORD.size:
        return None
    magic, size = _RECORD.unpack_from(head)
    return int(size) if magic == SLOT_MAGIC else None


def meta_sop_instance(head: bytes) -> str | None:
    """Media Storage SOP Instance UID (0002,0003) of the File Meta Information in ``head``
    (a Part 10 file's first bytes); None if it is not there."""
    if head[128:132] != b"DICM":
        return None
    offset = META_START
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return None
        vr = head[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if element == 0x0003:
            raw = head[start : start + length]
            return raw.rstrip(b"\x00 ").decode("ascii", errors="replace") if raw else None
        offset = start + length
    return None


def clear_record(dfd: int, name: str) -> None:
    """Zero the record of a settled slot (its instance is named durably now): stored
    files keep an all-zero preamble."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return
    try:
        os.pwrite(fd, _CLEARED, 0)
    finally:
        os.close(fd)


def copy_into(src: int, dst: int, size: int) -> None:
    """Copy the first ``size`` bytes of file ``src`` to the start of ``dst`` (in the kernel
    where the file system allows)."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, done, done)
            if n == 0:
                raise OSError(errno.EIO, "the temp file ended before its recorded size")
            done += n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < size:  # no copy_file_range here: through user space
        chunk = os.pread(src, min(size - done, 1 << 20), done)
        if not chunk:
            raise OSError(errno.EIO, "the temp file ended before its recorded size")
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, done)
            view = view[written:]
            done += written


class GroupSlots:
    """One association's slots in the group folder ``path`` (``dfd``: that folder, open).

    The association's handler takes slots; when fewer than half a batch are left, a
    thread creates the next batch (off the instances' path: creating files waits on the
    file system's journal while other files are being fsynced).
    """

    def __init__(self, dfd: int, path: Path) -> None:
        self.dfd = dfd
        self.path = path
        self.free: list[str] = []
        self.pending: list[str] = []  # used; their <sop>.dcm names not yet fsynced
        self.batch = _FIRST_BATCH
        self._lock = threading.Lock()
        self._refiller: threading.Thread | None = None
        self._settling = False

    def take(self) -> str:
        """A free slot, durable and empty (a new batch first when none is left)."""
        with self._lock:
            name = self.free.pop() if self.free else None
        if name is None:
            self._join()
            with self._lock:
                name = self.free.pop() if self.free else None
            if name is None:
                self.refill()
                with self._lock:
                    name = self.free.pop()
        self.top_up()
        return name

    def pop_free(self) -> str | None:
        with self._lock:
            return self.free.pop() if self.free and self.dfd >= 0 else None

    def used(self, name: str) -> None:
        """``name`` holds an instance now, also named ``<sop uid>.dcm``."""
        with self._lock:
            self.pending.append(name)

    def top_up(self) -> None:
        """Start creating the next batch if fewer than half a batch are free."""
        with self._lock:
            if self._settling or len(self.free) * 2 >= self.batch or self._refiller is not None:
                return
            self._refiller = threading.Thread(
                target=self._refill_quietly, name="DicomSpoolSlots", daemon=True
            )
            self._refiller.start()

    def _refill_quietly(self) -> None:
        try:
            self.refill()
        except OSError as exc:  # the next take() creates them itself, or reports the failure
            log.warning("could not create spool slots ahead: %s", exc)
        finally:
            with self._lock:
                self._refiller = None

    def _join(self) -> None:
        refiller = self._refiller
        if refiller is not None and refiller is not threading.current_thread():
            refiller.join()

    def refill(self) -> None:
        """Create a batch of empty slots and fsync the folder: the new slots' entries, and
        the names of the instances in slots used so far, are then durable, so those slot
        names go."""
        with self._lock:
            covered, self.pending = self.pending, []
            count = self.batch
        created = []
        try:
            for _ in range(count):
                name = slot_name()
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                os.close(os.open(name, flags, 0o644, dir_fd=self.dfd))
                created.append(name)
            os.fsync(self.dfd)
        except BaseException:
            for name in created:
                unlink_at(self.dfd, name)
            with self._lock:
                self.pending[:0] = covered
            raise
        with self._lock:
            self.free.extend(created)
            self.batch = min(self.batch * 2, _MAX_BATCH)
        for name in covered:
            clear_record(self.dfd, name)
            unlink_at(self.dfd, name)

    def settle(self) -> None:
        """Make the used slots' ``<sop uid>.dcm`` names durable, then remove every slot name
        (an fsync failure leaves the used ones to recovery); closes the folder."""
        with self._lock:
            self._settling = True
        self._join()
        with self._lock:
            free, self.free = self.free, []
            pending, self.pending = self.pending, []
            dfd, self.dfd = self.dfd, -1
        if dfd < 0:
            return
        try:
            for name in free:
                unlink_at(dfd, name)
            if pending:
                try:
                    os.fsync(dfd)
                except OSError as exc:
                    log.warning("could not sync a group folder's names (left to recovery): %s", exc)
                    return
                for name in pending:
                    clear_record(dfd, name)
                    unlink_at(dfd, name)
        finally:
            os.close(dfd)


class SlotPool:
    """The slots of one association, per group folder; :meth:`settle` at its end.

    ``current`` is the group of the association's last durable store, set only for
    groups the association holds (so that folder stays the open group until its end).
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[int, int], GroupSlots] = {}
        self._lock = threading.Lock()  # the stream opener (DUL thread) and the handler
        self.current: GroupSlots | None = None

    def __len__(self) -> int:
        return len(self._groups)

    def group(self, dfd: int, key: tuple[int, int], path: Path) -> GroupSlots:
        """The association's slots in the group folder ``path`` open as ``dfd`` (``key``:
        its dev and inode)."""
        with self._lock:
            slots = self._groups.get(key)
            if slots is None:
                slots = self._groups[key] = GroupSlots(os.dup(dfd), path)
            return slots

    def open_current(self) -> tuple[GroupSlots, str, int] | None:
        """A free slot of the current group, open for reading and writing; None if none."""
        slots = self.current
        name = slots.pop_free() if slots is not None else None
        if slots is None or name is None:
            return None
        try:
            fd = os.open(name, os.O_RDWR | os.O_CLOEXEC, dir_fd=slots.dfd)
        except OSError:
            unlink_at(slots.dfd, name)
            return None
        slots.top_up()
        return slots, name, fd

    def settle(self) -> None:
        """Settle every group's slots (idempotent); call before the association's holds go."""
        with self._lock:
            groups, self._groups = list(self._groups.values()), {}
            self.current = None
        for slots in groups:
            slots.settle()


def recover(dfd: int) -> int:
    """Settle the slots a dead writer left in the folder open as ``dfd`` (held by no live
    association, under its exclusive lock, or closed); returns the instances named again."""
    slots = [n for n in os.listdir(dfd) if n.endswith(SLOT_SUFFIX)]
    if not slots:
        return 0
    settled: list[str] = []
    named = 0
    for slot in slots:
        try:
            fd = os.open(slot, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            head = os.pread(fd, _MAX_META, 0)
        finally:
            os.close(fd)
        sop = meta_sop_instance(head) if read_slot_record(head) == st.st_size else None
        name = f"{sop}.dcm"
        if sop is None or not FILE_NAME.match(name):
            if st.st_size:
                log.warning("removing an incomplete spool slot %s (never acknowledged)", slot)
            unlink_at(dfd, slot)  # empty (unused) or cut short: never acknowledged
            continue
        try:
            current = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is None:
            os.link(slot, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            named += 1
        elif (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino) and stored_dataset_size(
            dfd, name
        ) != dataset_size(head, st.st_size):
            os.rename(slot, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            named += 1
            continue
        settled.append(slot)
    if named:
        os.fsync(dfd)
        log.info("spool recovery named %d acknowledged instances again", named)
    for slot in settled:
        clear_record(dfd, slot)
        unlink_at(dfd, slot)
    return named
