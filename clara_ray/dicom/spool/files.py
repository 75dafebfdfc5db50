"""Durable file writing for the spool: temp files, fsyncs, links, and Part 10 sizes.

A file is written under a unique temporary name in its AE title's folder
(``incoming/<AET>/.<random>.tmp``: the receiver streams a data set there as it
arrives, before it knows the group), fsynced, then hard-linked to
``<group>/<sop>.dcm`` (:func:`publish`): a link never replaces an existing file,
so of several writers of one SOP instance (threads or processes) exactly one
creates it and the others see a duplicate.  A new folder's entry is fsynced in
its parent (:func:`make_dir`); :func:`syncfs` flushes everything written without
fsync in one call.  :func:`dataset_size` tells two copies of one instance apart
by the size of their data sets.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from clara_ray.dicom.spool.names import temp_name

__all__ = [
    "META_START",
    "NO_LINK",
    "TempFile",
    "dataset_size",
    "fsync_dir",
    "make_dir",
    "publish",
    "scandir",
    "stored_dataset_size",
    "syncfs",
    "unlink_at",
    "unlink_quietly",
    "write_temp",
]

META_START = 132  # preamble and "DICM": the file meta group length element follows
_LIBC = ctypes.CDLL(None, use_errno=True)
# Link-less filesystems: fall back to rename (concurrent duplicates then overwrite each other
# with the same instance, still one file).
NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})


@dataclass
class TempFile:
    """A new temp file in an AE title's spool folder, open for writing (see Spool.create_temp),
    or a free slot of the association's current group (``slots``: see :mod:`.slots`)."""

    dfd: int  # the folder holding it (the AE title's, or the slot's group folder), open
    aet: str  # the AE title's folder name
    name: str  # "" once it is the stored instance (a slot keeps its name until settled)
    fd: int  # open for writing; -1 once finished
    slots: object | None = None  # the group's slots (.slots.GroupSlots) it is one of, if a slot

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
            if self.name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.name, dir_fd=self.dfd)
            os.close(self.dfd)
            self.dfd = -1


def dataset_size(head: bytes, total: int) -> int:
    """Bytes after the file meta group of a Part 10 file of ``total`` bytes; -1 if ``head``
    (its first bytes) is no such file (or one cut short)."""
    if len(head) < META_START + 12 or head[128:132] != b"DICM":
        return -1
    if head[META_START : META_START + 6] != b"\x02\x00\x00\x00UL":
        return -1
    (meta,) = struct.unpack_from("<I", head, META_START + 8)
    return total - META_START - 12 - meta


def stored_dataset_size(dfd: int, name: str) -> int | None:
    """:func:`dataset_size` of the stored file ``name``; None when there is none."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return None
    try:
        return dataset_size(os.pread(fd, META_START + 12, 0), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` (``syncfs``; ``sync`` where libc lacks it)."""
    libc_syncfs = getattr(_LIBC, "syncfs", None)
    if libc_syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc_syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs of {path} failed: {os.strerror(code)}")
    finally:
        os.close(fd)


def write_temp(dfd: int, name: str, data: bytes, durable: bool) -> str:
    """Write ``data`` (instance ``name``) to a new uniquely named temp file in the folder
    (and fsync it)."""
    temp = temp_name(unplaced=False)
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


def publish(tdfd: int, temp: str, dfd: int, name: str) -> bool:
    """Give the complete temp file (in folder ``tdfd``) its final name in folder ``dfd``;
    False if that name exists."""
    try:
        os.link(temp, name, src_dir_fd=tdfd, dst_dir_fd=dfd)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in NO_LINK:
            raise
    try:
        os.stat(name, dir_fd=dfd)
        return False
    except FileNotFoundError:
        os.rename(temp, name, src_dir_fd=tdfd, dst_dir_fd=dfd)
        return True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """Create ``path`` (its parent exists) and make the new entry durable."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    fsync_dir(path.parent)


def scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def unlink_at(dfd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dfd)
