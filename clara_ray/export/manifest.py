"""What a job asks to be sent where: the export manifest and its result paths.

An export operator (:func:`clara_ray.operators.export.export_dicom`) writes one
manifest, ``export.json``, into its own results folder; after the job ends the
DICOM adapter finds every manifest of the job with :func:`find_manifests` and
sends the files it names to the destinations it names.  The format::

    {
      "version": 1,
      "destinations": ["PACS", "RESEARCH"],
      "files": ["deidentify/2.1000....dcm", "seg/seg.dcm"]
    }

**Result paths.**  A file produced by an operator is named, wherever it travels
between operators and in the manifest, by its path relative to the job's
results root: ``"<operator>/<name>"``, where ``<operator>`` is the writing
operator's name (``ctx.operator``) and ``<name>`` the name it gave
:meth:`ResultsDir.write_bytes <clara_ray.storage.ResultsDir.write_bytes>`.
:func:`result_ref` builds one, :func:`check_result_ref` validates one and
:func:`result_path` turns one into a storage path.  Destination names are the
names of destinations configured in the DICOM adapter (``[A-Za-z0-9_.-]``,
at most 64 characters); whether one exists is the adapter's concern.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clara_ray.errors import ExportManifestError
from clara_ray.storage import Storage

__all__ = [
    "DESTINATION_PATTERN",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "ExportManifest",
    "ExportManifestError",
    "check_destination",
    "check_result_ref",
    "find_manifests",
    "result_path",
    "result_ref",
    "split_destinations",
]

MANIFEST_NAME = "export.json"
"""File name of the manifest inside the export operator's results folder."""

MANIFEST_VERSION = 1
"""Version written into every manifest; :meth:`ExportManifest.from_json` refuses others."""

DESTINATION_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""What a destination name looks like."""

_KEYS = {"version", "destinations", "files"}


def check_destination(name: object) -> str:
    """``name`` when it is a valid destination name; raises otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"destination name must be a string, got {type(name).__name__}")
    if not DESTINATION_PATTERN.match(name):
        raise ExportManifestError(
            f"destination name {name!r} is invalid: expected 1 to 64 characters among "
            "letters, digits, '_', '.' and '-'"
        )
    return name


def check_result_ref(ref: object) -> str:
    """``ref`` when it is a valid result path ``"<operator>/<name>"``; raises otherwise."""
    if not isinstance(ref, str):
        raise TypeError(f"result path must be a string, got {type(ref).__name__}")
    problem = None
    parts = ref.split("/")
    if not ref:
        problem = "it is empty"
    elif "\\" in ref or "\x00" in ref:
        problem = "it contains a backslash or a NUL character"
    elif ref.startswith("/"):
        problem = "it is absolute"
    elif any(p in ("", ".", "..") for p in parts):
        problem = "it has an empty, '.' or '..' component"
    elif len(parts) < 2:
        problem = "it names no operator"
    if problem:
        raise ExportManifestError(
            f"result path {ref!r} is invalid ({problem}): expected '<operator>/<name>', "
            "relative to the job's results root"
        )
    return ref


def result_ref(operator: str, name: str) -> str:
    """The result path of file ``name`` written by ``operator``: ``"<operator>/<name>"``."""
    return check_result_ref(f"{operator}/{name}")


def result_path(storage: Storage, job_id: str, ref: str) -> str:
    """The storage path of result path ``ref`` of job ``job_id``."""
    return posixpath.join(storage.results_root(job_id), check_result_ref(ref))


def split_destinations(value: str | Iterable[str]) -> tuple[str, ...]:
    """Destination names from ``"A, B"`` or ``["A", "B"]``: validated, de-duplicated, in order."""
    if isinstance(value, str):
        names: list[object] = [part.strip() for part in value.split(",")]
    elif isinstance(value, Iterable):
        names = list(value)
    else:
        raise TypeError(
            "destinations must be a string (comma-separated names) or a list of names, "
            f"got {type(value).__name__}"
        )
    if not names or names == [""]:
        raise ExportManifestError(f"destinations {value!r} name no destination")
    return tuple(dict.fromkeys(check_destination(n) for n in names))


def _tuple_of_str(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(
            f"export manifest {what} must be a list of strings, got {type(value).__name__}"
        )
    return tuple(value)


@dataclass(frozen=True)
class ExportManifest:
    """Which result files go to which destinations (see the module docstring)."""

    destinations: tuple[str, ...]
    files: tuple[str, ...]

    def __post_init__(self) -> None:
        destinations = _tuple_of_str(self.destinations, "destinations")
        files = _tuple_of_str(self.files, "files")
        object.__setattr__(self, "destinations", destinations)
        object.__setattr__(self, "files", files)
        if not destinations:
            raise ExportManifestError("export manifest names no destination; expected at least one")
        if not files:
            raise ExportManifestError("export manifest names no file; expected at least one")
        for name in destinations:
            check_destination(name)
        for ref in files:
            check_result_ref(ref)
        for what, values in (("destination", destinations), ("file", files)):
            seen: set[str] = set()
            for v in values:
                if v in seen:
                    raise ExportManifestError(f"export manifest names {what} {v!r} twice")
                seen.add(v)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "destinations": list(self.destinations),
                "files": list(self.files),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ExportManifest:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportManifestError(f"export manifest is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ExportManifestError(
                f"export manifest must be a JSON object, got {type(raw).__name__}"
            )
        unknown = sorted(set(raw) - _KEYS)
        missing = sorted(_KEYS - set(raw))
        if unknown or missing:
            raise ExportManifestError(
                f"export manifest keys must be {sorted(_KEYS)}; unknown: {unknown}, missing: {missing}"
            )
        if raw["version"] != MANIFEST_VERSION:
            raise ExportManifestError(
                f"export manifest version {raw['version']!r} is not supported; "
                f"expected {MANIFEST_VERSION}"
            )
        return cls(
            destinations=_tuple_of_str(raw["destinations"], "destinations"),
            files=_tuple_of_str(raw["files"], "files"),
        )


def find_manifests(storage: Storage, job_id: str) -> list[tuple[str, ExportManifest]]:
    """Every ``(operator, manifest)`` of job ``job_id``, by operator name.

    A manifest is a file ``<operator>/export.json`` at the top of an operator's
    results folder.  An unreadable manifest raises :class:`ExportManifestError`
    naming the job and the operator.
    """
    found = []
    for entry in storage.list_results(job_id):
        operator, _, name = entry.path.partition("/")
        if name != MANIFEST_NAME:
            continue
        data = storage.read_bytes(posixpath.join(storage.results_root(job_id), entry.path))
        try:
            manifest = ExportManifest.from_json(data)
        except (ExportManifestError, TypeError) as exc:
            raise ExportManifestError(
                f"job {job_id}: export manifest of operator '{operator}' is invalid: {exc}"
            ) from exc
        found.append((operator, manifest))
    return sorted(found, key=lambda item: item[0])
