"""The spool's groups: their records, and the holds open associations keep on them.

When a group is quiet (:attr:`OpenGroup.last_activity`): the newest of its
files' and folder's mtimes, of its marker's (see below) and of the AE title's
*unplaced* temp files (``.<random>.unplaced.tmp``: an instance still arriving
on an association that has stored nothing yet, so its group is not known; a
write updates the mtime).  A group is *held* (:attr:`OpenGroup.held`) while an
association that stored into it is open: a :class:`GroupHolds` keeps a shared
``flock`` on the group's marker file (``.associations``) from the association's
first store into the group to its end, and touches the marker when it lets go.
The kernel drops the lock of a process that dies, so a crashed receiver holds
nothing.  :meth:`~clara_ray.dicom.spool.Spool.close_group` never closes a held group.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from clara_ray.dicom.spool.files import fsync_dir

__all__ = ["MARKER", "ClosingGroup", "GroupHolds", "OpenGroup", "is_held", "remove_empty"]

log = logging.getLogger("clara_ray.dicom.spool")  # one logger for the whole spool

MARKER = ".associations"


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


def is_held(dfd: int) -> bool:
    """Whether an association holds the group folder open as ``dfd`` (its marker is locked)."""
    try:
        fd = os.open(MARKER, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
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
        fd = os.open(MARKER, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=dfd)
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


def remove_empty(path: Path) -> None:
    """Remove a group folder holding no instance (and at most an unheld marker)."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)  # no writer takes the marker meanwhile
        if is_held(dfd):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(MARKER, dir_fd=dfd)
        try:
            path.rmdir()
        except OSError:  # not empty any more (a writer just started), or gone
            return
    finally:
        os.close(dfd)
    fsync_dir(path.parent)
