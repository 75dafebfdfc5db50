"""The receive spool: every acknowledged instance is a durable file before its Success status.

Layout under ``root``::

    incoming/<AET>/<grouping>-<group uid>/<sop instance uid>.dcm       open groups
    closing/<AET>/<grouping>-<group uid>-<closed at, ms>/<sop uid>.dcm  groups being ingested

``<AET>`` is the called AE title with every character outside ``[A-Za-z0-9_-]``
written as ``%XX``, so no AE title can name a path; group and instance UIDs must
match ``^[0-9.]{1,64}$``.  Nothing else from a data set reaches a file name.

The durability guarantee of :meth:`Spool.store` (``durable=True``): when it
returns, the file's bytes and its directory entry (and the entries of any folder
it created) have been fsynced; a crash afterwards loses nothing.  With
``durable=False`` the file is complete in the page cache (a killed process loses
nothing) and reaches the disk at the next :meth:`Spool.sync` (one ``syncfs`` for
a whole association, instead of two fsyncs per instance).  A stored copy
whose data set differs in size from a new copy of the same instance (one cut
short by a power failure before it was synced) is replaced rather than kept as
a duplicate.  A file is written under a unique temporary name in its AE title's
folder (``incoming/<AET>/.<random>.tmp``: the receiver streams a data set there
as it arrives, before it knows the group), fsynced, then hard-linked to
``<group>/<sop>.dcm``: a link never replaces an existing file, so of several
writers of one SOP instance (threads or processes) exactly one creates it and
the others see a duplicate.  Listings show only complete ``.dcm`` files;
temporary files left by a killed writer are ignored and cleaned up.

When a group is quiet (:attr:`OpenGroup.last_activity`): the newest of its
files' and folder's mtimes, of its marker's (see below) and of the AE title's
*unplaced* temp files (``.<random>.unplaced.tmp``: an instance still arriving
on an association that has stored nothing yet, so its group is not known; a
write updates the mtime).  A group is *held* (:attr:`OpenGroup.held`) while an
association that stored into it is open: a :class:`GroupHolds` keeps a shared
``flock`` on the group's marker file (``.associations``) from the association's
first store into the group to its end, and touches the marker when it lets go.
The kernel drops the lock of a process that dies, so a crashed receiver holds
nothing.  :meth:`Spool.close_group` never closes a held group.

Closing a group renames its folder into ``closing/`` (atomic) while holding
an exclusive ``flock`` on it; a writer names its file only under a shared lock
on the folder, after checking that the folder is still the open group.  So a
file is never named in a folder that was already renamed (and perhaps already
listed by the closer): a writer whose folder was closed under it stores the
instance again into a fresh open folder, and every instance lands in exactly
one group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from clara_ray.config.dicom import check_ae_title

__all__ = ["ClosingGroup", "GroupHolds", "OpenGroup", "Spool", "TempFile"]

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9.]{1,64}$")
_GROUPINGS = ("study", "series")
_OPEN_NAME = re.compile(r"^(study|series)-([0-9.]{1,64})$")
_CLOSING_NAME = re.compile(r"^(study|series)-([0-9.]{1,64})-([0-9]{1,16})$")
_FILE_NAME = re.compile(r"^[0-9.]{1,64}\.dcm$")
_TEMP_SUFFIX = ".tmp"
_UNPLACED_SUFFIX = ".unplaced.tmp"
_MARKER = ".associations"
_AET_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_STORE_ATTEMPTS = 20
_META_START = 132  # preamble and "DICM": the file meta group length element follows
_LIBC = ctypes.CDLL(None, use_errno=True)
# Link-less filesystems: fall back to rename (concurrent duplicates then overwrite each other
# with the same instance, still one file).
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})


@dataclass(frozen=True)
class OpenGroup:
    """A group still receiving instances."""

    called_ae: str
    grouping: str
    group_uid: str
    path: Path
    last_activity: float  # epoch seconds: see the module docstring
    files: int  # complete instances
    held: bool = False  # an open association stored into it: it must not close yet


@dataclass(frozen=True)
class ClosingGroup:
    """A closed group, renamed out of ``incoming/``, waiting to become a payload."""

    called_ae: str
    grouping: str
    group_uid: str
    closed_at: float  # epoch seconds, millisecond precision
    path: Path
    key: str  # the folder name, ``<grouping>-<group uid>-<closed at ms>``: stable and unique per AE


def _check_uid(field: str, value: str) -> str:
    if not isinstance(value, str) or not _UID.match(value):
        raise ValueError(f"{field} must be 1-64 digits and dots, got {str(value)[:80]!r}")
    return value


def _check_grouping(value: str) -> str:
    if value not in _GROUPINGS:
        raise ValueError(f"grouping must be one of {_GROUPINGS}, got {value!r}")
    return value


def aet_folder(ae_title: str) -> str:
    """The folder name of an AE title: ``[A-Za-z0-9_-]`` kept, anything else as ``%XX``."""
    text = check_ae_title(ae_title)
    return "".join(c if c in _AET_SAFE else f"%{ord(c):02X}" for c in text)


def _aet_from_folder(name: str) -> str | None:
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "%":
            try:
                out.append(chr(int(name[i + 1 : i + 3], 16)))
            except ValueError:
                return None
            i += 3
        elif c in _AET_SAFE:
            out.append(c)
            i += 1
        else:
            return None
    text = "".join(out)
    try:
        return text if aet_folder(text) == name else None
    except ValueError:
        return None


def _dataset_size(head: bytes, total: int) -> int:
    """Bytes after the file meta group of a Part 10 file of ``total`` bytes; -1 if ``head``
    (its first bytes) is no such file (or one cut short)."""
    if len(head) < _META_START + 12 or head[128:132] != b"DICM":
        return -1
    if head[_META_START : _META_START + 6] != b"\x02\x00\x00\x00UL":
        return -1
    (meta,) = struct.unpack_from("<I", head, _META_START + 8)
    return total - _META_START - 12 - meta


def _stored_dataset_size(dfd: int, name: str) -> int | None:
    """:func:`_dataset_size` of the stored file ``name``; None when there is none."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return None
    try:
        return _dataset_size(os.pread(fd, _META_START + 12, 0), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` (``syncfs``; ``sync`` where libc lacks it)."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs of {path} failed: {os.strerror(code)}")
    finally:
        os.close(fd)


def _temp_name(unplaced: bool) -> str:
    return f".{uuid.uuid4().hex}{_UNPLACED_SUFFIX if unplaced else _TEMP_SUFFIX}"


def _write_temp(dfd: int, name: str, data: bytes, durable: bool) -> str:
    """Write ``data`` (instance ``name``) to a new uniquely named temp file in the folder
    (and fsync it)."""
    temp = _temp_name(unplaced=False)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dfd)
        raise
    return temp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_held(dfd: int) -> bool:
    """Whether an association holds the group folder open as ``dfd`` (its marker is locked)."""
    try:
        fd = os.open(_MARKER, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


class GroupHolds:
    """The groups one association stored into, held open until :meth:`release`.

    Each group's hold is a shared ``flock`` on its marker file; closers only test it
    (non-blocking), so many associations, in any process, hold one group at once.
    Used from the association's thread only.
    """

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._fds)

    def _hold(self, dfd: int) -> None:
        st = os.fstat(dfd)
        key = (st.st_dev, st.st_ino)
        if key in self._fds:
            return
        fd = os.open(_MARKER, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._fds[key] = fd

    def release(self) -> None:
        """Let go of every group; each one's quiet time starts now (idempotent)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.utime(fd)
            except OSError as exc:  # the group then counts from its last file: only logged
                log.warning("could not touch a group marker at association end: %s", exc)
            finally:
                os.close(fd)


@dataclass
class TempFile:
    """A new temp file in an AE title's spool folder, open for writing (see Spool.create_temp)."""

    dfd: int  # the AE title's folder, open
    aet: str  # that folder's name
    name: str
    fd: int  # open for writing; -1 once finished

    def finish(self, durable: bool) -> None:
        """Close the file for writing (fsynced first if ``durable``)."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove whatever is left of the file (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.dfd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.dfd)
            os.close(self.dfd)
            self.dfd = -1


def _make_dir(path: Path) -> None:
    """Create ``path`` (its parent exists) and make the new entry durable."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


class Spool:
    """Durable, concurrent-safe storage of received instances, grouped per AE title."""

    def __init__(self, root: Path, *, stale_temp_seconds: float = 600.0) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.closing = self.root / "closing"
        self.stale_temp_seconds = stale_temp_seconds
        self.root.mkdir(parents=True, exist_ok=True)
        _make_dir(self.incoming)
        _make_dir(self.closing)

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
        folder = f"{_check_grouping(grouping)}-{_check_uid('group_uid', group_uid)}"
        name = f"{_check_uid('sop_instance_uid', sop_instance_uid)}.dcm"
        parent = self.incoming / aet
        _make_dir(parent)
        afd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        temp = TempFile(afd, aet, _write_temp(afd, name, data, durable), -1)
        size = _dataset_size(data[: _META_START + 12], len(data))
        try:
            return self._place(temp, aet, folder, name, size, durable, holds)
        finally:
            temp.discard()

    def create_temp(self, called_ae: str, *, unplaced: bool) -> TempFile:
        """A new, empty temp file in the AE title's folder, to write an arriving instance to.

        ``unplaced``: its association holds no group yet, so while the file is being
        written it counts as activity of every group of the AE title.
        """
        aet = aet_folder(called_ae)
        parent = self.incoming / aet
        _make_dir(parent)
        afd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            name = _temp_name(unplaced)
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
    ) -> bool:
        """Give a complete temp file from :meth:`create_temp` (closed with ``finish``) its
        name in the open group, as :meth:`store` does; the temp file is discarded."""
        try:
            folder = f"{_check_grouping(grouping)}-{_check_uid('group_uid', group_uid)}"
            name = f"{_check_uid('sop_instance_uid', sop_instance_uid)}.dcm"
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
        parent = self.incoming / aet
        path = parent / folder
        for _ in range(_STORE_ATTEMPTS):
            dfd = self._open_group(parent, path)
            try:
                stored = self._store_in(dfd, path, name, temp, size, durable, holds)
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

    def sync(self) -> None:
        """Make every file stored with ``durable=False`` so far durable (one ``syncfs``)."""
        _syncfs(self.root)

    def _open_group(self, parent: Path, path: Path) -> int:
        while True:
            try:
                return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                _make_dir(parent)
                _make_dir(path)

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
            stored_size = _stored_dataset_size(dfd, name)
            fcntl.flock(dfd, fcntl.LOCK_SH)
            try:
                if not self._still_open(dfd, path):
                    return None
                if holds is not None:
                    holds._hold(dfd)
                if stored_size == size:
                    stored = False
                elif stored_size is None:
                    stored = self._publish(temp.dfd, temp.name, dfd, name)
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
    def _publish(tdfd: int, temp: str, dfd: int, name: str) -> bool:
        """Give the complete temp file (in folder ``tdfd``) its final name in folder ``dfd``;
        False if that name exists."""
        try:
            os.link(temp, name, src_dir_fd=tdfd, dst_dir_fd=dfd)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        try:
            os.stat(name, dir_fd=dfd)
            return False
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=tdfd, dst_dir_fd=dfd)
            return True

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
            entries = _scandir(aet_entry.path)
            unplaced = self._scan_temps(entries, now)
            for entry in entries:
                match = _OPEN_NAME.match(entry.name)
                if not match or not entry.is_dir(follow_symlinks=False):
                    continue
                count, newest, held = self._scan_group(Path(entry.path), now)
                if count == 0:
                    if now - newest > self.stale_temp_seconds and not held:
                        _remove_empty(Path(entry.path))
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
            if not entry.name.endswith(_TEMP_SUFFIX):
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if now - mtime > self.stale_temp_seconds:
                _unlink_quietly(Path(entry.path))
            elif entry.name.endswith(_UNPLACED_SUFFIX):
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
            held = _is_held(dfd)
        finally:
            os.close(dfd)
        count = 0
        for entry in _scandir(str(path)):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if _FILE_NAME.match(entry.name) or entry.name == _MARKER:
                count += entry.name != _MARKER
                newest = max(newest, mtime)
            elif entry.name.endswith(_TEMP_SUFFIX) and now - mtime > self.stale_temp_seconds:
                _unlink_quietly(Path(entry.path))
        return count, newest, held

    def close_group(self, group: OpenGroup, closed_at: float) -> ClosingGroup | None:
        """Rename the group's folder into ``closing/`` atomically; None if it is gone or
        held by an open association."""
        aet = aet_folder(group.called_ae)
        folder = f"{_check_grouping(group.grouping)}-{_check_uid('group_uid', group.group_uid)}"
        source = self.incoming / aet / folder
        target_parent = self.closing / aet
        _make_dir(target_parent)
        try:
            sfd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(sfd, fcntl.LOCK_EX)  # waits for writers naming a file in the folder
            if not self._still_open(sfd, source):
                return None  # closed meanwhile (this folder, if any, is a newer group)
            if _is_held(sfd):
                return None  # an open association stored into it: not closed yet
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
            _fsync_dir(source.parent)
            _fsync_dir(target_parent)
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
            for entry in _scandir(aet_entry.path):
                match = _CLOSING_NAME.match(entry.name)
                if not match or not entry.is_dir(follow_symlinks=False):
                    continue
                for temp in _scandir(entry.path):
                    if temp.name.endswith(_TEMP_SUFFIX):
                        _unlink_quietly(Path(temp.path))
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

    def files(self, path: Path) -> list[Path]:
        """The complete instances (``<sop uid>.dcm``) in a group folder, sorted by name."""
        return sorted(
            Path(e.path)
            for e in _scandir(str(path))
            if _FILE_NAME.match(e.name) and e.is_file(follow_symlinks=False)
        )

    def remove(self, closing: ClosingGroup) -> None:
        """Delete a closing group's folder (after its payload is sealed); idempotent."""
        path = self.closing / aet_folder(closing.called_ae) / closing.key
        if not _CLOSING_NAME.match(closing.key):
            raise ValueError(f"closing key {closing.key!r} is not <grouping>-<uid>-<ms>")
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise OSError(errno.ENOTEMPTY, f"could not remove closing group folder {path}")
        if path.parent.exists():
            _fsync_dir(path.parent)

    def free_bytes(self) -> int:
        """Bytes available to this (unprivileged) process on the spool's filesystem."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _aet_folders(self, base: Path) -> list[tuple[os.DirEntry[str], str]]:
        out = []
        for entry in _scandir(str(base)):
            called_ae = _aet_from_folder(entry.name)
            if called_ae is None or not entry.is_dir(follow_symlinks=False):
                log.debug("ignoring %s in the spool: not an AE title folder", entry.path)
                continue
            out.append((entry, called_ae))
        return out


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_empty(path: Path) -> None:
    """Remove a group folder holding no instance (and at most an unheld marker)."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)  # no writer takes the marker meanwhile
        if _is_held(dfd):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_MARKER, dir_fd=dfd)
        try:
            path.rmdir()
        except OSError:  # not empty any more (a writer just started), or gone
            return
    finally:
        os.close(dfd)
    _fsync_dir(path.parent)
