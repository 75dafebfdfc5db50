"""C-STORE data sets written to the spool as they arrive, never held in memory.

pynetdicom's DIMSE layer collects a request's data set by calling ``write`` on
the message's ``data_set`` (a ``BytesIO``) once per P-DATA fragment, in the
association's DUL thread.  The receiver puts a :class:`StreamedDataset` there
instead (``PromptDimse.receive_primitive`` in :mod:`clara_ray.dicom.scp.tuning`): at
the first fragment of a C-STORE request it opens a spool temp file
(:meth:`~clara_ray.dicom.spool.Spool.create_temp`; with durability ``instance``,
once the association stored into a group, a free slot of that group: see
:mod:`clara_ray.dicom.spool.slots`) and writes the preamble and File Meta
Information (:mod:`clara_ray.dicom.part10`), then appends each fragment as it
comes.  The C-STORE handler then finds the whole instance in that file: it
checks it through a read-only ``mmap`` and gives it its name in the group (one
hard link; a slot first gets its record and one fsync), with no copy of the
data set in the process (an instance of another group than its slot's is
copied into one of that group's slots, in the kernel).

A data set larger than ``limit`` bytes stops being written at the fragment that
crosses it (the file is removed; later fragments are only counted), so the
handler can refuse it without ever having stored it.  Nothing here raises into
pynetdicom's DUL thread: a failure to open or write the file is kept in
:attr:`StreamedDataset.error` for the handler to answer with a failure status.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any

from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage

from clara_ray.dicom.spool import TempFile

__all__ = ["StreamedDataset"]

Opener = Callable[[C_STORE_RQ], tuple[TempFile, bytes]]
"""Opens the temp file of a C-STORE request and returns it with the file's header."""


class StreamedDataset(BytesIO):
    """The data set of one DIMSE message; for a C-STORE request, a spool temp file.

    A ``BytesIO`` only because pynetdicom's primitives accept nothing else; for a
    C-STORE request it keeps no byte in memory.  Other messages (none carry a data
    set to this receiver) fall back to plain ``BytesIO`` behaviour.
    """

    def __init__(self, message: DIMSEMessage, opener: Opener, limit: int) -> None:
        super().__init__()
        self._message: DIMSEMessage | None = message
        self._opener = opener
        self._lock = threading.Lock()
        self._in_memory = False
        self.limit = limit
        self.temp: TempFile | None = None
        self.header_length = 0  # preamble and file meta, before the data set in the file
        self.size = 0  # data set bytes received, written or not
        self.too_large = False
        self.error: Exception | None = None

    def write(self, data: Any) -> int:
        if self._in_memory:
            return super().write(data)
        view = memoryview(data)
        with self._lock:
            if self._message is not None and not self._start():
                return super().write(data)
            self.size += len(view)
            temp = self.temp
            if temp is None or temp.fd < 0:
                return len(view)
            if self.size > self.limit:
                self.too_large = True
                self._drop()
                return len(view)
            try:
                _write_all(temp.fd, view)
            except OSError as exc:
                self.error = exc
                self._drop()
        return len(view)

    def _start(self) -> bool:
        """Open the temp file at the first fragment; False for a message that is no C-STORE."""
        message, self._message = self._message, None
        if not isinstance(message, C_STORE_RQ):
            self._in_memory = True
            return False
        try:
            temp, header = self._opener(message)
        except Exception as exc:  # kept for the handler: never raised into the DUL thread
            self.error = exc
            return True
        self.temp = temp
        self.header_length = len(header)
        try:
            _write_all(temp.fd, memoryview(header))
        except OSError as exc:
            self.error = exc
            self._drop()
        return True

    def _drop(self) -> None:
        temp, self.temp = self.temp, None
        if temp is not None:
            temp.discard()

    def take(self) -> TempFile | None:
        """The complete temp file, now the caller's to store or discard."""
        with self._lock:
            temp, self.temp = self.temp, None
        return temp

    def discard(self) -> None:
        """Remove the temp file if it is still there (idempotent; any thread)."""
        with self._lock:
            self._drop()


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
