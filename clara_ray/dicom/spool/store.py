"""The spool itself: storing received instances into open groups, listing and closing them.

The durability guarantee of :meth:`Spool.store` (``durable=True``): when it
returns, the file's bytes and its directory entry (and the entries of any folder
it created) have been fsynced; a crash afterwards loses nothing.  The receiver's
:meth:`Spool.store_temp` gives the same guarantee with one fsync per instance, through
slot files whose entries were made durable ahead (:mod:`.slots`): there the durable
entry is the slot's until the folder's next fsync, and recovery names the instance
again if a power failure lost its ``<sop uid>.dcm`` entry.  With
``durable=False`` the file is complete in the page cache (a killed process loses
nothing) and reaches the disk at the next :meth:`Spool.sync` (one ``syncfs`` for
a whole association, instead of two fsyncs per instance).  A stored copy
whose data set differs in size from a new copy of the same instance (one cut
short by a power failure before it was synced) is replaced rather than kept as
a duplicate.  Listings show only complete ``.dcm`` files; temporary files left
by a killed writer are ignored and cleaned up.

Closing a group renames its folder into ``closing/`` (atomic) while holding
an exclusive ``flock`` on it; a writer names its file only under a shared lock
on the folder, after checking that the folder is still the open group.  So a
file is never named in a folder that was already renamed (and perhaps already
listed by the closer): a writer whose folder was closed under it stores the
instance again into a fresh open folder, and every instance lands in exactly
one group.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from clara_ray.dicom.spool.files import (
    META_START,
    NO_LINK,
    TempFile,
    dataset_size,
    fsync_dir,
    make_dir,
    publish,
    scandir,
    stored_dataset_size,
    syncfs,
    unlink_at,
    unlink_quietly,
    write_temp,
)
from clara_ray.dicom.spool.groups import (
    MARKER,
    ClosingGroup,
    GroupHolds,
    OpenGroup,
    is_held,
    remove_empty,
)
from clara_ray.dicom.spool.names import (
    CLOSING_NAME,
    FILE_NAME,
    OPEN_NAME,
    SLOT_SUFFIX,
    TEMP_SUFFIX,
    UNPLACED_SUFFIX,
    aet_folder,
    aet_from_folder,
    check_grouping,
    check_uid,
    temp_name,
)
from clara_ray.dicom.spool.slots import GroupSlots, SlotPool, copy_into, recover, slot_record

__all__ = ["Spool"]

log = logging.getLogger("clara_ray.dicom.spool")  # one logger for the whole spool

_STORE_ATTEMPTS = 20


class Spool:
    """Durable, concurrent-safe storage of received instances, grouped per AE title."""

    def __init__(self, root: Path, *, stale_temp_seconds: float = 600.0) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.closing = self.root / "closing"
        self.stale_temp_seconds = stale_temp_seconds
        self.root.mkdir(parents=True, exist_ok=True)
        make_dir(self.incoming)
        make_dir(self.closing)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- receiving -------------------------------------------------------------------------
    def store(
        self,
        called_ae: str,
        grouping: str,
        group_uid: str,
        sop_instance_uid: str,
        data: bytes,
        *,
        durable: bool = True,
        holds: GroupHolds | None = None,
    ) -> bool:
        """Write ``data`` (a complete DICOM file) into the open group; fsynced if ``durable``.

        Returns False when the SOP instance is already in the open group with a data
        set of the same size.  Raises ValueError for an invalid AE title, grouping or
        UID, OSError when the disk fails (ENOSPC: out of space).
        """
        aet = aet_folder(called_ae)
        folder = f"{check_grouping(grouping)}-{check_uid('group_uid', group_uid)}"
        name = f"{check_uid('sop_instance_uid', sop_instance_uid)}.dcm"
        parent = self.incoming / aet
        make_dir(parent)
        afd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        temp = TempFile(afd, aet, write_temp(afd, name, data, durable), -1)
        size = dataset_size(data[: META_START + 12], len(data))
        try:
            return self._place(temp, aet, folder, name, size, durable, holds)
        finally:
            temp.discard()

    def create_temp(
        self, called_ae: str, *, unplaced: bool, slots: SlotPool | None = None
    ) -> TempFile:
        """A new, empty temp file in the AE title's folder, to write an arriving instance to.

        ``unplaced``: its association holds no group yet, so while the file is being
        written it counts as activity of every group of the AE title.  With ``slots``
        (durability ``instance``), a free slot of the association's current group when
        it has one: an instance of that group then needs no copy (see :mod:`.slots`).
        """
        aet = aet_folder(called_ae)
        if slots is not None and not unplaced:
            opened = slots.open_current()
            if opened is not None:
                group, name, fd = opened
                try:
                    dfd = os.dup(group.dfd)
                except BaseException:
                    os.close(fd)
                    os.unlink(name, dir_fd=group.dfd)
                    raise
                return TempFile(dfd, aet, name, fd, group)
        parent = self.incoming / aet
        make_dir(parent)
        afd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            name = temp_name(unplaced)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(name, flags, 0o644, dir_fd=afd)
        except BaseException:
            os.close(afd)
            raise
        return TempFile(afd, aet, name, fd)

    def store_temp(
        self,
        temp: TempFile,
        grouping: str,
        group_uid: str,
        sop_instance_uid: str,
        dataset_size: int,
        *,
        durable: bool = True,
        holds: GroupHolds | None = None,
        slots: SlotPool | None = None,
    ) -> bool:
        """Give a complete temp file from :meth:`create_temp` its name in the open group, as
        :meth:`store` does (closing it first, fsynced if ``durable``); the temp file is
        discarded.

        With ``durable``, ``slots`` and ``holds`` (the association's: its slots live only
        in groups it holds), the instance goes into a slot of the group: one fsync instead
        of two (see :mod:`.slots`).
        """
        try:
            folder = f"{check_grouping(grouping)}-{check_uid('group_uid', group_uid)}"
            name = f"{check_uid('sop_instance_uid', sop_instance_uid)}.dcm"
            if durable and slots is not None and holds is not None:
                return self._place_slot(temp, folder, name, dataset_size, holds, slots)
            temp.finish(durable)
            return self._place(temp, temp.aet, folder, name, dataset_size, durable, holds)
        finally:
            temp.discard()

    def _place(
        self,
        temp: TempFile,
        aet: str,
        folder: str,
        name: str,
        size: int,
        durable: bool,
        holds: GroupHolds | None,
    ) -> bool:
        return self._in_open_group(
            aet,
            folder,
            name,
            lambda dfd, path: self._store_in(dfd, path, name, temp, size, durable, holds),
        )

    def _in_open_group(
        self, aet: str, folder: str, name: str, store: Callable[[int, Path], bool | None]
    ) -> bool:
        """``store(dfd, path)`` in the open group folder, again while the folder was closed
        under it (``store`` returned None); its answer otherwise."""
        parent = self.incoming / aet
        path = parent / folder
        for _ in range(_STORE_ATTEMPTS):
            dfd = self._open_group(parent, path)
            try:
                stored = store(dfd, path)
            finally:
                os.close(dfd)
            if stored is not None:
                return stored
            log.debug(
                "group folder %s/%s closed while storing %s; storing again", aet, folder, name
            )
        raise OSError(
            errno.EAGAIN,
            f"group folder {aet}/{folder} was closed {_STORE_ATTEMPTS} times while storing {name}",
        )

    def _place_slot(
        self,
        temp: TempFile,
        folder: str,
        name: str,
        size: int,
        holds: GroupHolds | None,
        slots: SlotPool,
    ) -> bool:
        current = slots.current
        if current is not None and current.path == self.incoming / temp.aet / folder:
            # the association holds this folder: it stays the open group until its end
            return self._commit_slot(current, current.dfd, name, temp, size, slots)
        return self._in_open_group(
            temp.aet,
            folder,
            name,
            lambda dfd, path: self._store_slot_in(dfd, path, name, temp, size, holds, slots),
        )

    def _store_slot_in(
        self,
        dfd: int,
        path: Path,
        name: str,
        temp: TempFile,
        size: int,
        holds: GroupHolds | None,
        slots: SlotPool,
    ) -> bool | None:
        """:meth:`_store_in` through a slot: under the folder's shared lock, the folder is
        checked to be the open group and held, then the instance is committed to a slot."""
        try:
            fcntl.flock(dfd, fcntl.LOCK_SH)
            try:
                if not self._still_open(dfd, path):
                    return None
                if holds is not None:
                    holds._hold(dfd)
                st = os.fstat(dfd)
                group = slots.group(dfd, (st.st_dev, st.st_ino), path)
                stored = self._commit_slot(group, dfd, name, temp, size, None)
                if holds is not None:
                    slots.current = group
                return stored
            finally:
                fcntl.flock(dfd, fcntl.LOCK_UN)
        except FileNotFoundError:  # the folder was removed meanwhile
            return None

    def _commit_slot(
        self,
        group: GroupSlots,
        dfd: int,
        name: str,
        temp: TempFile,
        size: int,
        slots: SlotPool | None,
    ) -> bool:
        """Put the instance into a durable slot of ``group`` (``temp`` itself when it is
        one), write its record, fsync it once, then name it; False for a duplicate."""
        if temp.slots is group and temp.fd >= 0:
            slot, fd = temp.name, temp.fd
            temp.fd = -1
            temp.name = ""  # the slot is the instance now: never unlinked as a temp
        else:
            slot, fd = self._copy_to_slot(temp, group)
        try:
            os.pwrite(fd, slot_record(os.fstat(fd).st_size), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            unlink_at(group.dfd, slot)
            raise
        os.close(fd)
        if slots is not None:
            slots.current = group
        return self._name_slot(group, dfd, slot, name, size)

    @staticmethod
    def _copy_to_slot(temp: TempFile, group: GroupSlots) -> tuple[str, int]:
        slot = group.take()
        try:
            fd = os.open(slot, os.O_WRONLY | os.O_CLOEXEC, dir_fd=group.dfd)
        except BaseException:
            unlink_at(group.dfd, slot)
            raise
        try:
            src = temp.fd
            if src < 0:
                src = os.open(temp.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=temp.dfd)
            try:
                copy_into(src, fd, os.fstat(src).st_size)
            finally:
                if src != temp.fd:
                    os.close(src)
        except BaseException:
            os.close(fd)
            unlink_at(group.dfd, slot)
            raise
        return slot, fd

    @staticmethod
    def _name_slot(group: GroupSlots, dfd: int, slot: str, name: str, size: int) -> bool:
        """Give the complete, durable slot its instance name; False for a duplicate (a
        stored copy with a data set of the same size)."""
        try:
            os.link(slot, name, src_dir_fd=group.dfd, dst_dir_fd=dfd)
            group.used(slot)
            return True
        except FileExistsError:
            if stored_dataset_size(dfd, name) == size:
                group.used(slot)  # removed with the others once the folder is synced
                return False
        except OSError as exc:
            if exc.errno not in NO_LINK:
                raise
            os.rename(slot, name, src_dir_fd=group.dfd, dst_dir_fd=dfd)
            os.fsync(dfd)  # no second name here: the folder's entry is the only one
            return True
        # a different (or cut short) copy: the new one replaces it; until that rename is
        # durable, recovery finds the complete slot beside the old copy and does it again
        os.rename(slot, name, src_dir_fd=group.dfd, dst_dir_fd=dfd)
        return True

    def sync(self) -> None:
        """Make every file stored with ``durable=False`` so far durable (one ``syncfs``)."""
        syncfs(self.root)

    def _open_group(self, parent: Path, path: Path) -> int:
        while True:
            try:
                return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                make_dir(parent)
                make_dir(path)

    def _store_in(
        self,
        dfd: int,
        path: Path,
        name: str,
        temp: TempFile,
        size: int,
        durable: bool,
        holds: GroupHolds | None,
    ) -> bool | None:
        """Store into the folder open as ``dfd``; None when it is no longer the open group.

        The temp file is complete (and fsynced) already; under a shared lock on the
        folder (close_group takes it exclusively to rename), the folder is checked to still
        be the open group before ``holds`` takes the group and the file gets its name: a
        file is never named in a folder that a closer has already renamed, so each
        instance lands in exactly one group, and a group that a closer found not held
        cannot become held before it is renamed.
        """
        try:
            stored_size = stored_dataset_size(dfd, name)
            fcntl.flock(dfd, fcntl.LOCK_SH)
            try:
                if not self._still_open(dfd, path):
                    return None
                if holds is not None:
                    holds._hold(dfd)
                if stored_size == size:
                    stored = False
                elif stored_size is None:
                    stored = publish(temp.dfd, temp.name, dfd, name)
                else:  # a different (or cut short) copy: the new one replaces it
                    os.rename(temp.name, name, src_dir_fd=temp.dfd, dst_dir_fd=dfd)
                    stored = True
                if durable:
                    os.fsync(dfd)
                return stored
            finally:
                fcntl.flock(dfd, fcntl.LOCK_UN)
        except FileNotFoundError:  # the folder was removed meanwhile
            return None

    @staticmethod
    def _still_open(dfd: int, path: Path) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        fst = os.fstat(dfd)
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    # -- listing and closing ---------------------------------------------------------------
    def open_groups(self) -> list[OpenGroup]:
        """Every open group holding at least one complete instance (stale temp files and
        stale empty folders are removed on the way)."""
        groups = []
        now = time.time()
        for aet_entry, called_ae in self._aet_folders(self.incoming):
            entries = scandir(aet_entry.path)
            unplaced = self._scan_temps(entries, now)
            for entry in entries:
                match = OPEN_NAME.match(entry.name)
                if not match or not entry.is_dir(follow_symlinks=False):
                    continue
                count, newest, held = self._scan_group(Path(entry.path), now)
                if count == 0:
                    if now - newest > self.stale_temp_seconds and not held:
                        remove_empty(Path(entry.path))
                    continue
                groups.append(
                    OpenGroup(
                        called_ae=called_ae,
                        grouping=match.group(1),
                        group_uid=match.group(2),
                        path=Path(entry.path),
                        last_activity=max(newest, unplaced),
                        files=count,
                        held=held,
                    )
                )
        return sorted(groups, key=lambda g: (g.called_ae, g.grouping, g.group_uid))

    def _scan_temps(self, entries: list[os.DirEntry[str]], now: float) -> float:
        """The newest mtime of the AE title's unplaced temp files (0 if none); removes
        stale temp files."""
        newest = 0.0
        for entry in entries:
            if not entry.name.endswith(TEMP_SUFFIX):
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if now - mtime > self.stale_temp_seconds:
                unlink_quietly(Path(entry.path))
            elif entry.name.endswith(UNPLACED_SUFFIX):
                newest = max(newest, mtime)
        return newest

    def _scan_group(self, path: Path, now: float) -> tuple[int, float, bool]:
        """(complete files, newest mtime of the folder, its files and its marker, held);
        removes stale temps."""
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0, now, False
        try:
            newest = os.fstat(dfd).st_mtime
            held = is_held(dfd)
        finally:
            os.close(dfd)
        entries = scandir(str(path))
        if not held and any(e.name.endswith(SLOT_SUFFIX) for e in entries):
            self._recover_open(path)  # slots of a dead writer
            entries = scandir(str(path))
        count = 0
        for entry in entries:
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if FILE_NAME.match(entry.name) or entry.name == MARKER:
                count += entry.name != MARKER
                newest = max(newest, mtime)
            elif entry.name.endswith(TEMP_SUFFIX) and now - mtime > self.stale_temp_seconds:
                unlink_quietly(Path(entry.path))
        return count, newest, held

    def _recover_open(self, path: Path) -> None:
        """:func:`~.slots.recover` the open group folder ``path`` unless an association holds
        it (under its exclusive lock: no writer is naming a file or taking a hold)."""
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            if self._still_open(dfd, path) and not is_held(dfd):
                recover(dfd)
        finally:
            os.close(dfd)

    def close_group(self, group: OpenGroup, closed_at: float) -> ClosingGroup | None:
        """Rename the group's folder into ``closing/`` atomically; None if it is gone or
        held by an open association."""
        aet = aet_folder(group.called_ae)
        folder = f"{check_grouping(group.grouping)}-{check_uid('group_uid', group.group_uid)}"
        source = self.incoming / aet / folder
        target_parent = self.closing / aet
        make_dir(target_parent)
        try:
            sfd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(sfd, fcntl.LOCK_EX)  # waits for writers naming a file in the folder
            if not self._still_open(sfd, source):
                return None  # closed meanwhile (this folder, if any, is a newer group)
            if is_held(sfd):
                return None  # an open association stored into it: not closed yet
            recover(sfd)  # slots a dead writer left: their instances are named first
            return self._rename_to_closing(group, source, target_parent, folder, closed_at)
        finally:
            os.close(sfd)  # releases the lock

    def _rename_to_closing(
        self, group: OpenGroup, source: Path, target_parent: Path, folder: str, closed_at: float
    ) -> ClosingGroup:
        ms = int(closed_at * 1000)
        for bump in range(1000):
            key = f"{folder}-{ms + bump}"
            target = target_parent / key
            if target.exists():
                continue
            try:
                os.rename(source, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            fsync_dir(source.parent)
            fsync_dir(target_parent)
            return ClosingGroup(
                called_ae=group.called_ae,
                grouping=group.grouping,
                group_uid=group.group_uid,
                closed_at=(ms + bump) / 1000.0,
                path=target,
                key=key,
            )
        raise FileExistsError(
            f"no free closing folder name for {source.parent.name}/{folder} near {ms} ms"
        )

    def closing_groups(self) -> list[ClosingGroup]:
        """Every closed group not yet removed, oldest first (temp files inside are removed:
        a writer whose folder was closed stores its instance again elsewhere)."""
        groups = []
        for aet_entry, called_ae in self._aet_folders(self.closing):
            for entry in scandir(aet_entry.path):
                match = CLOSING_NAME.match(entry.name)
                if not match or not entry.is_dir(follow_symlinks=False):
                    continue
                inside = scandir(entry.path)
                for temp in inside:
                    if temp.name.endswith(TEMP_SUFFIX):
                        unlink_quietly(Path(temp.path))
                if any(e.name.endswith(SLOT_SUFFIX) for e in inside):
                    self._recover_closed(Path(entry.path))
                groups.append(
                    ClosingGroup(
                        called_ae=called_ae,
                        grouping=match.group(1),
                        group_uid=match.group(2),
                        closed_at=int(match.group(3)) / 1000.0,
                        path=Path(entry.path),
                        key=entry.name,
                    )
                )
        return sorted(groups, key=lambda g: (g.closed_at, g.called_ae, g.key))

    @staticmethod
    def _recover_closed(path: Path) -> None:
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            recover(dfd)
        finally:
            os.close(dfd)

    def files(self, path: Path) -> list[Path]:
        """The complete instances (``<sop uid>.dcm``) in a group folder, sorted by name."""
        return sorted(
            Path(e.path)
            for e in scandir(str(path))
            if FILE_NAME.match(e.name) and e.is_file(follow_symlinks=False)
        )

    def remove(self, closing: ClosingGroup) -> None:
        """Delete a closing group's folder (after its payload is sealed); idempotent."""
        path = self.closing / aet_folder(closing.called_ae) / closing.key
        if not CLOSING_NAME.match(closing.key):
            raise ValueError(f"closing key {closing.key!r} is not <grouping>-<uid>-<ms>")
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise OSError(errno.ENOTEMPTY, f"could not remove closing group folder {path}")
        if path.parent.exists():
            fsync_dir(path.parent)

    def free_bytes(self) -> int:
        """Bytes available to this (unprivileged) process on the spool's filesystem."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _aet_folders(self, base: Path) -> list[tuple[os.DirEntry[str], str]]:
        out = []
        for entry in scandir(str(base)):
            called_ae = aet_from_folder(entry.name)
            if called_ae is None or not entry.is_dir(follow_symlinks=False):
                log.debug("ignoring %s in the spool: not an AE title folder", entry.path)
                continue
            out.append((entry, called_ae))
        return out
