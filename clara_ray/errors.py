"""The one exception tree of clara-ray.

Every error the library raises on purpose derives from :class:`ClaraError`.
Edges translate them: the CLI prints the message and exits non-zero, the HTTP
API turns them into a status code and a JSON body, the DICOM adapter into a
DICOM failure status.  Messages name the thing, the value and what was
expected, so that an operator can act on them without reading code.
"""

from __future__ import annotations

__all__ = [
    "ClaraError",
    "ConfigError",
    "ConflictError",
    "ExportManifestError",
    "NotFoundError",
    "OperatorError",
    "PayloadSealedError",
    "PipelineError",
    "PipelineValidationError",
    "PlatformNotRunningError",
    "SeriesError",
    "StorageError",
    "UnschedulableError",
]


class ClaraError(Exception):
    """Base class of every error clara-ray raises deliberately."""


class ConfigError(ClaraError, ValueError):
    """A settings file or environment override is invalid; the message names the key."""


class NotFoundError(ClaraError, KeyError):
    """A pipeline, payload, job or result that was asked for does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0]) if self.args else ""


class ConflictError(ClaraError):
    """The request contradicts existing state (same id, different content; wrong job state)."""


class PipelineError(ClaraError):
    """A pipeline cannot be used as given."""


class PipelineValidationError(PipelineError, ValueError):
    """A pipeline definition is invalid.

    ``problems`` holds one line per problem; each names the file, the operator
    (where one is concerned) and the key.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PayloadSealedError(ClaraError, PermissionError):
    """Something tried to write into a sealed (read-only) payload."""


class StorageError(ClaraError, OSError):
    """The storage backend failed or a path escapes its root."""


class OperatorError(ClaraError):
    """An operator failed in a way it could describe (bad input, missing series)."""


class SeriesError(OperatorError, ValueError):
    """DICOM instances do not form a usable series (gaps, duplicates, mixed geometry)."""


class ExportManifestError(ClaraError, ValueError):
    """An export manifest, a destination name or a result path is invalid."""


class PlatformNotRunningError(ClaraError):
    """No clara-ray platform (Ray cluster and Core actor) could be reached."""


class UnschedulableError(ClaraError):
    """A job can never run on the cluster: its operators need more than the cluster has."""
