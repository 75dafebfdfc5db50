"""A job's result files as the API lists and serves them, kept inside the job's results.

:func:`result_path` refuses a malformed request path (``ValueError``: 400);
:class:`ResultFiles` answers :class:`~clara_ray.errors.NotFoundError` (404) for a path
that is not a file of the job, including a symbolic link that leads out of its results.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
from dataclasses import dataclass
from typing import IO

import pyarrow.fs as pafs

from clara_ray.errors import NotFoundError
from clara_ray.storage import FileEntry, Storage

__all__ = ["ResultFile", "ResultFiles", "content_type", "result_path"]

_TYPES = {".dcm": "application/dicom"}


def result_path(raw: str) -> str:
    """A result's path relative to the job's results, checked; ValueError if malformed.

    Refused: empty, absolute, backslashes, NUL, empty, ``.`` and ``..`` segments.
    """
    parts = raw.split("/")
    if (
        raw == ""
        or raw.startswith("/")
        or "\\" in raw
        or "\x00" in raw
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            f"result path {raw!r} must be relative to the job's results, with no '..', '.' "
            "or empty segments, backslashes or NUL"
        )
    return raw


def content_type(path: str) -> str:
    """The media type of a result file by its name (``application/dicom`` for ``.dcm``)."""
    suffix = posixpath.splitext(path)[1].lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass
class ResultFile:
    """An open result file: its stream (the caller closes it) and its size."""

    stream: IO[bytes]
    size: int


class ResultFiles:
    """The files below ``results/<job>/`` of one storage (blocking: call from a thread)."""

    def __init__(self, storage: Storage, job_id: str) -> None:
        self.storage = storage
        self.job_id = job_id
        self.root = storage.results_root(job_id)

    def _inside(self, full: str) -> str | None:
        """The file's real path when it is a regular file inside the results, else None."""
        real = os.path.realpath(full)
        root = os.path.realpath(self.root)
        if not real.startswith(root + os.sep) or not os.path.isfile(real):
            return None
        return real

    def list(self) -> list[FileEntry]:
        entries = self.storage.list_results(self.job_id)
        if not self.storage.is_local:
            return entries
        return [e for e in entries if self._inside(posixpath.join(self.root, e.path))]

    def open(self, path: str) -> ResultFile:
        full = posixpath.join(self.root, result_path(path))
        missing = NotFoundError(f"the job has no result file {path!r}")
        if self.storage.is_local:
            real = self._inside(full)
            if real is None:
                raise missing
            stream = open(real, "rb")  # noqa: SIM115 - the caller closes it
            return ResultFile(stream, os.fstat(stream.fileno()).st_size)
        info = self.storage.fs.get_file_info(full)
        if info.type != pafs.FileType.File:
            raise missing
        return ResultFile(self.storage.fs.open_input_stream(full), int(info.size or 0))
