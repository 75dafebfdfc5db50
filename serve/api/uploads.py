"""A payload upload (``multipart/form-data``) spooled to disk as it arrives.

File parts are written straight to files below a folder; a part named ``*.zip`` (or
sent as ``application/zip``) is spooled apart and its members extracted there when the
upload ends.  Nothing is held whole in memory, and the byte limit is counted on what
arrives and on what is extracted, never on what a header or a zip directory claims.
Member and file names must stay inside the folder: absolute names, ``..`` segments and
symbolic links are refused (``ValueError``, naming the member).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["MAX_FILES", "MultipartSpool", "Upload", "UploadTooLargeError", "safe_member_path"]

MAX_FILES = 100_000
"""Files one upload may hold, zip members included."""

_CHUNK = 1024 * 1024
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
_FIELDS = frozenset({"name"})
_MAX_FIELD_BYTES = 4096


class UploadTooLargeError(Exception):
    """The upload (as sent, or its zips extracted) exceeds the limit."""


@dataclass(frozen=True)
class Upload:
    """A finished upload: its files below ``folder`` and its form fields."""

    folder: Path
    files: int
    bytes: int
    name: str | None


def safe_member_path(name: str, what: str) -> str:
    """``name`` as a relative POSIX path that stays inside its folder; ValueError if not.

    Backslashes count as separators (zips written on Windows); absolute names, drive
    letters, empty, ``.`` and ``..`` segments and NUL are refused.
    """
    text = name.replace("\\", "/")
    parts = text.split("/")
    if parts and parts[-1] == "":  # a trailing slash names a folder
        parts = parts[:-1]
    if (
        "\x00" in text
        or text.startswith("/")
        or (len(text) > 1 and text[1] == ":")
        or not parts
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            f"{what} {name!r} is not a relative path inside the payload "
            "(absolute, '..' and empty segments are refused)"
        )
    return "/".join(parts)


def _create(path: Path, name: str) -> IO[bytes]:
    try:
        return open(path, "xb")
    except OSError:
        raise ValueError(f"file {name!r} clashes with another file of the upload") from None


class MultipartSpool:
    """Feed it the request body chunk by chunk (:meth:`feed`), then :meth:`finish`.

    Args:
        content_type: the request's ``Content-Type`` (``multipart/form-data; boundary=...``).
        folder: an empty folder the upload's files are written below (``files/``).
        limit: the most bytes the body, and the files once zips are extracted, may take.
    """

    def __init__(self, content_type: str | None, folder: Path, limit: int) -> None:
        media, options = parse_options_header(content_type)
        if media != b"multipart/form-data" or b"boundary" not in options:
            raise ValueError(
                f"Content-Type {content_type!r}: expected multipart/form-data with a boundary"
            )
        self.limit = limit
        self.files_dir = folder / "files"
        self.zips_dir = folder / "zips"
        self.files_dir.mkdir()
        self.zips_dir.mkdir()
        self.received = 0
        self.fields: dict[str, str] = {}
        self._files: set[str] = set()
        self._zips: list[tuple[str, Path]] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._field: str | None = None
        self._value = bytearray()
        self._out: IO[bytes] | None = None
        self._parser = MultipartParser(
            options[b"boundary"],
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_part,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    # -- the body ------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Parse and write one chunk of the body (blocking file I/O: call it in a thread)."""
        self.received += len(chunk)
        if self.received > self.limit:
            self._close()
            raise UploadTooLargeError(f"the upload exceeds {self.limit} bytes")
        try:
            self._parser.write(chunk)
        except BaseException:
            self._close()
            raise

    def finish(self) -> Upload:
        """Extract the zips and return the upload; ValueError when it holds no file."""
        self._parser.finalize()
        if self._out is not None or self._field is not None:
            self._close()
            raise ValueError("the multipart body ends inside a part")
        total = sum(p.stat().st_size for p in self.files_dir.rglob("*") if p.is_file())
        for zip_name, path in self._zips:
            total = self._extract(zip_name, path, total)
            path.unlink()
        if not self._files:
            raise ValueError("the upload holds no file: send DICOM files and/or a zip")
        return Upload(self.files_dir, len(self._files), total, self.fields.get("name") or None)

    # -- parser callbacks ----------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = []
        self._field = None
        self._value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._header_name.lower(), self._header_value))
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        headers = dict(self._headers)
        _, disposition = parse_options_header(headers.get(b"content-disposition"))
        field = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        if filename is None:
            if field not in _FIELDS:
                raise ValueError(
                    f"form field {field!r} is not known; expected 'name' and file parts"
                )
            self._field = field
            return
        name = safe_member_path(filename.decode("utf-8", "replace"), "uploaded file")
        media, _ = parse_options_header(headers.get(b"content-type"))
        if name.lower().endswith(".zip") or media.decode("latin-1") in _ZIP_TYPES:
            path = self.zips_dir / f"{len(self._zips)}.zip"
            self._zips.append((name, path))
        else:
            path = self._new_file(name, "uploaded file")
        self._out = _create(path, name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._out.write(data[start:end])
        elif self._field is not None:
            if len(self._value) + end - start > _MAX_FIELD_BYTES:
                raise ValueError(
                    f"form field {self._field!r} is longer than {_MAX_FIELD_BYTES} bytes"
                )
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", "replace").strip()
            self._field = None

    # -- files -----------------------------------------------------------------

    def _new_file(self, name: str, what: str) -> Path:
        if name in self._files:
            raise ValueError(f"{what} {name!r} comes twice in the upload")
        if len(self._files) >= MAX_FILES:
            raise ValueError(f"the upload holds more than {MAX_FILES} files")
        self._files.add(name)
        path = self.files_dir / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise ValueError(f"{what} {name!r} clashes with another file of the upload") from None
        return path

    def _extract(self, zip_name: str, path: Path, total: int) -> int:
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    what = f"member of {zip_name!r}"
                    mode = member.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise ValueError(f"{what} {member.filename!r} is a symbolic link")
                    if member.is_dir():
                        safe_member_path(member.filename, what)
                        continue
                    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                        raise ValueError(f"{what} {member.filename!r} is not a regular file")
                    target = self._new_file(safe_member_path(member.filename, what), what)
                    total = self._copy_member(archive, member, target, total)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"uploaded file {zip_name!r} is not a valid zip: {exc}") from None
        except RuntimeError as exc:  # encrypted members
            raise ValueError(f"uploaded file {zip_name!r} cannot be read: {exc}") from None
        return total

    def _copy_member(
        self, archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, total: int
    ) -> int:
        with archive.open(member) as src, _create(target, member.filename) as out:
            while chunk := src.read(_CHUNK):
                total += len(chunk)
                if total > self.limit:
                    raise UploadTooLargeError(
                        f"the upload's files exceed {self.limit} bytes once extracted"
                    )
                out.write(chunk)
        return total

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
