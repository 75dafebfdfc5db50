"""Payloads, results and logs on a :mod:`pyarrow.fs` filesystem.

One layout, whatever the backend (a local folder by default, or an
``s3://``, ``gs://`` or ``hdfs://`` URI)::

    <root>/payloads/<payload id>/data/...        the files, never written after sealing
    <root>/payloads/<payload id>/manifest.json   written last: its presence seals the payload
    <root>/results/<job id>/<operator>/...       one writer: that job's operator
    <root>/logs/<job id>/<operator>/<attempt>.log

A payload is uploaded into ``data/`` and sealed by writing its manifest; from
then on :class:`Storage` refuses every write below it, and on a local
filesystem its files are also made read-only.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow.fs as pafs

from clara_ray.errors import NotFoundError, PayloadSealedError, StorageError

__all__ = ["FileEntry", "PayloadManifest", "PayloadView", "ResultsDir", "Storage"]

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""

_CHUNK = 4 * 1024 * 1024
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int


@dataclass(frozen=True)
class PayloadManifest:
    payload_id: str
    files: tuple[FileEntry, ...]
    sealed_at: float

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        return json.dumps(
            {
                "payload_id": self.payload_id,
                "sealed_at": self.sealed_at,
                "files": [asdict(f) for f in self.files],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PayloadManifest:
        raw = json.loads(text)
        return cls(
            payload_id=raw["payload_id"],
            sealed_at=float(raw["sealed_at"]),
            files=tuple(FileEntry(f["path"], int(f["size"])) for f in raw["files"]),
        )


def _clean_relative(path: str) -> str:
    """A relative POSIX path that cannot climb out of the folder it is joined to."""
    norm = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
    if norm in ("", ".") or norm == ".." or norm.startswith("../"):
        raise StorageError(f"path {path!r} is empty or leaves its folder")
    return norm


class Storage:
    """The platform's files, on a local folder or any pyarrow filesystem URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            if "://" in uri:
                self.fs, root = pafs.FileSystem.from_uri(uri)
            else:
                self.fs, root = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise StorageError(f"storage URI {uri!r} cannot be opened: {exc}") from exc
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (Storage, (self.uri,))

    # -- paths -----------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def payload_root(self, payload_id: str) -> str:
        return self._path("payloads", _clean_relative(payload_id))

    def results_root(self, job_id: str, operator: str | None = None) -> str:
        parts = ["results", _clean_relative(job_id)]
        if operator:
            parts.append(_clean_relative(operator))
        return self._path(*parts)

    def view_settings_path(self, job_id: str, volume: str) -> str:
        """Where the render server keeps a volume's saved view (``views/<job>/<volume>.json``)."""
        return self._path("views", _clean_relative(job_id), _clean_relative(volume) + ".json")

    def local_path(self, path: str) -> Path | None:
        """The OS path for ``path`` when storage is local, else None."""
        return Path(path) if self.is_local else None

    # -- low-level helpers -----------------------------------------------------
    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def _list_files(self, base: str) -> list[FileEntry]:
        if not self._exists(base):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        entries = [
            FileEntry(posixpath.relpath(i.path, base), int(i.size or 0))
            for i in infos
            if i.type == pafs.FileType.File
        ]
        return sorted(entries, key=lambda e: e.path)

    def _check_writable(self, path: str) -> None:
        payloads = self._path("payloads") + "/"
        if path.startswith(payloads):
            payload_id = path[len(payloads) :].split("/", 1)[0]
            if self.is_sealed(payload_id):
                raise PayloadSealedError(
                    f"payload {payload_id} is sealed and read-only; cannot write {path}"
                )

    def write_bytes(self, path: str, data: bytes) -> None:
        self._check_writable(path)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no such file in storage: {path}") from exc

    def copy_in(self, local_file: Path, path: str, progress: Progress | None = None) -> int:
        """Copy a local file to ``path``; returns its size."""
        self._check_writable(path)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        size = 0
        with open(local_file, "rb") as src, self.fs.open_output_stream(path) as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
        return size

    def copy_out(self, path: str, local_file: Path, progress: Progress | None = None) -> None:
        local_file.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(path) as src, open(local_file, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                if progress:
                    progress(len(chunk))

    def delete_tree(self, path: str) -> None:
        if not self._exists(path):
            return
        if self.is_local:
            for dirpath, _dirs, files in os.walk(path):
                os.chmod(dirpath, 0o755)
                for name in files:
                    os.chmod(os.path.join(dirpath, name), 0o644)
        self.fs.delete_dir(path)

    # -- payloads --------------------------------------------------------------
    def upload_payload(
        self,
        payload_id: str,
        source: Path,
        progress: Progress | None = None,
        *,
        files: list[Path] | None = None,
        link: bool = False,
    ) -> list[FileEntry]:
        """Copy every file below ``source`` (or ``source`` itself, or only ``files`` below it)
        into a new payload.  With ``link`` on local storage, files are hard-linked when
        source and storage share a filesystem (the spool's files are never written again)."""
        source = Path(source)
        if not source.exists():
            raise NotFoundError(f"payload source {source} does not exist")
        if self.is_sealed(payload_id):
            raise PayloadSealedError(f"payload {payload_id} is already sealed")
        if files is None:
            files = (
                [source]
                if source.is_file()
                else sorted(p for p in source.rglob("*") if p.is_file())
            )
        base = source.parent if source.is_file() else source
        data = posixpath.join(self.payload_root(payload_id), "data")
        entries = []
        for f in files:
            rel = f.relative_to(base).as_posix()
            target = posixpath.join(data, _clean_relative(rel))
            if link and self.is_local and self._link(f, target):
                size = f.stat().st_size
                if progress:
                    progress(size)
            else:
                size = self.copy_in(f, target, progress)
            entries.append(FileEntry(rel, size))
        return entries

    def _link(self, source: Path, target: str) -> bool:
        try:
            os.makedirs(posixpath.dirname(target), exist_ok=True)
            if os.path.exists(target):
                os.unlink(target)
            os.link(source, target)
        except OSError:
            return False
        return True

    def seal_payload(self, payload_id: str) -> PayloadManifest:
        """Write the manifest (sealing the payload); idempotent."""
        existing = self.manifest(payload_id)
        if existing is not None:
            return existing
        root = self.payload_root(payload_id)
        files = tuple(self._list_files(posixpath.join(root, "data")))
        manifest = PayloadManifest(payload_id, files, time.time())
        if self.is_local:
            for dirpath, _dirs, names in os.walk(posixpath.join(root, "data")):
                for name in names:
                    p = os.path.join(dirpath, name)
                    os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        tmp = posixpath.join(root, _MANIFEST + ".tmp")
        self.fs.create_dir(root, recursive=True)
        with self.fs.open_output_stream(tmp) as out:
            out.write(manifest.to_json().encode())
        self.fs.move(tmp, posixpath.join(root, _MANIFEST))
        return manifest

    def manifest(self, payload_id: str) -> PayloadManifest | None:
        path = posixpath.join(self.payload_root(payload_id), _MANIFEST)
        if not self._exists(path):
            return None
        return PayloadManifest.from_json(self.read_bytes(path).decode())

    def is_sealed(self, payload_id: str) -> bool:
        return self._exists(posixpath.join(self.payload_root(payload_id), _MANIFEST))

    def payload_view(self, payload_id: str) -> PayloadView:
        manifest = self.manifest(payload_id)
        if manifest is None:
            raise NotFoundError(f"payload {payload_id} does not exist or is not sealed")
        return PayloadView(self, manifest)

    def delete_payload(self, payload_id: str) -> None:
        self.delete_tree(self.payload_root(payload_id))

    # -- results and logs ------------------------------------------------------
    def results(self, job_id: str, operator: str) -> ResultsDir:
        return ResultsDir(self, self.results_root(job_id, operator))

    def list_results(self, job_id: str, operator: str | None = None) -> list[FileEntry]:
        return self._list_files(self.results_root(job_id, operator))

    def download_results(
        self, job_id: str, operator: str | None, dest: Path, progress: Progress | None = None
    ) -> list[FileEntry]:
        base = self.results_root(job_id, operator)
        entries = self._list_files(base)
        for entry in entries:
            self.copy_out(posixpath.join(base, entry.path), Path(dest) / entry.path, progress)
        return entries

    def delete_results(self, job_id: str) -> None:
        self.delete_tree(self.results_root(job_id))
        self.delete_tree(self._path("logs", _clean_relative(job_id)))

    def write_log(self, job_id: str, operator: str, attempt: str, text: str) -> None:
        path = self._path(
            "logs", _clean_relative(job_id), _clean_relative(operator), _clean_relative(attempt)
        )
        self.write_bytes(path + ".log", text.encode())

    def read_logs(self, job_id: str, operator: str | None = None) -> dict[str, str]:
        """Log text per operator (attempts concatenated in time order)."""
        base = self._path("logs", _clean_relative(job_id))
        logs: dict[str, list[str]] = {}
        for entry in self._list_files(base):
            op = entry.path.split("/", 1)[0]
            if operator is None or op == operator:
                logs.setdefault(op, []).append(
                    self.read_bytes(posixpath.join(base, entry.path)).decode(errors="replace")
                )
        return {op: "".join(parts) for op, parts in logs.items()}


class PayloadView:
    """Read-only access to a sealed payload's files."""

    def __init__(self, storage: Storage, manifest: PayloadManifest) -> None:
        self._storage = storage
        self.manifest = manifest
        self.payload_id = manifest.payload_id
        self._data = posixpath.join(storage.payload_root(manifest.payload_id), "data")

    def __reduce__(self) -> tuple[Any, ...]:
        return (PayloadView, (self._storage, self.manifest))

    def files(self) -> list[str]:
        """Relative paths of every file in the payload, sorted."""
        return [f.path for f in self.manifest.files]

    def open(self, path: str) -> IO[bytes]:
        """A binary read stream for one file (for example, for ``pydicom.dcmread``)."""
        full = posixpath.join(self._data, _clean_relative(path))
        if self._storage.is_local:
            return open(full, "rb")
        return self._storage.fs.open_input_file(full)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    def local_path(self, path: str = "") -> Path | None:
        """The OS path of a file (or of the payload folder) when storage is local."""
        if not self._storage.is_local:
            return None
        return Path(self._data) / _clean_relative(path) if path else Path(self._data)

    def iter_files(self) -> Iterator[tuple[str, IO[bytes]]]:
        for name in self.files():
            with self.open(name) as f:
                yield name, f

    def write_bytes(self, path: str, data: bytes) -> None:
        raise PayloadSealedError(
            f"payload {self.payload_id} is read-only; write results to the job's results folder"
        )


class ResultsDir:
    """An operator's read-write results folder: ``results/<job>/<operator>/``."""

    def __init__(self, storage: Storage, root: str) -> None:
        self._storage = storage
        self.root = root

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResultsDir, (self._storage, self.root))

    @property
    def storage(self) -> Storage:
        """The storage holding this folder (to read other operators' results of the job)."""
        return self._storage

    def path(self, name: str) -> str:
        return posixpath.join(self.root, _clean_relative(name))

    def write_bytes(self, name: str, data: bytes) -> str:
        path = self.path(name)
        self._storage.write_bytes(path, data)
        return path

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode())

    def write_json(self, name: str, obj: Any) -> str:
        return self.write_text(name, json.dumps(obj, indent=2, sort_keys=True))

    def open_output(self, name: str) -> IO[bytes]:
        path = self.path(name)
        self._storage.fs.create_dir(posixpath.dirname(path), recursive=True)
        return self._storage.fs.open_output_stream(path)

    def read_bytes(self, name: str) -> bytes:
        return self._storage.read_bytes(self.path(name))

    def files(self) -> list[str]:
        return [f.path for f in self._storage._list_files(self.root)]

    def local_dir(self) -> Path | None:
        """The OS folder (created) when storage is local, for libraries that need a path."""
        if not self._storage.is_local:
            return None
        p = Path(self.root)
        p.mkdir(parents=True, exist_ok=True)
        return p
