"""What a send to a destination achieved: its result, its errors, DIMSE status text.

:func:`~clara_ray.export.scu.send_files` returns a :class:`SendResult` when the
association(s) were established, also when some instances were refused; it
raises :class:`DicomSendError` when the destination cannot be reached or
rejects the association.  :mod:`clara_ray.export.policy` decides from either
whether to try again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from clara_ray.config.dicom import DestinationConfig
from clara_ray.errors import ClaraError

__all__ = [
    "REASON_ABORTED",
    "REASON_NO_CONTEXT",
    "REASON_TIMEOUT",
    "REASON_UNREADABLE",
    "DicomSendError",
    "ErrorKind",
    "SendResult",
    "describe_status",
    "where",
]

ErrorKind = Literal["unreachable", "tls", "rejected", "aborted", "timeout", "no-context"]

# Local reasons in SendResult.failed start with one of these words and a colon.
REASON_UNREADABLE = "unreadable"
"""The file could not be read as a DICOM Part 10 file (permanent)."""
REASON_NO_CONTEXT = "no-context"
"""The peer accepted no presentation context the file can be sent in (permanent)."""
REASON_ABORTED = "aborted"
"""The association ended before the instance was answered (transient)."""
REASON_TIMEOUT = "timeout"
"""No response within the timeout; the association was aborted (transient)."""


def where(destination: DestinationConfig) -> str:
    """``destination 'PACS' (AE 'ORTHANC' at host:4242)``: a destination as messages name it."""
    return (
        f"destination {destination.name!r} "
        f"(AE {destination.ae_title!r} at {destination.host}:{destination.port})"
    )


class DicomSendError(ClaraError):
    """A destination could not be reached, or it rejected or dropped the association.

    ``kind`` says which (``"unreachable"``, ``"tls"``, ``"rejected"``,
    ``"aborted"``, ``"timeout"``, ``"no-context"``); for a rejection, ``reject``
    holds the A-ASSOCIATE-RJ ``(result, source, diagnostic)`` codes (result 1:
    permanent, 2: transient).  ``result`` holds what earlier associations of the
    same :func:`send_files` call sent, if any.
    """

    def __init__(
        self,
        destination: DestinationConfig,
        kind: ErrorKind,
        detail: str,
        *,
        reject: tuple[int, int, int] | None = None,
        result: SendResult | None = None,
    ) -> None:
        self.destination = destination
        self.kind: ErrorKind = kind
        self.detail = detail
        self.reject = reject
        self.result = result
        super().__init__(f"{where(destination)}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across Ray actors: keep every field
        return (type(self), (self.destination, self.kind, self.detail), self.__dict__)


@dataclass
class SendResult:
    """What one :func:`send_files` call achieved.

    ``failed`` holds ``(file, status)`` pairs: ``status`` is the DIMSE status
    code (an ``int``, e.g. ``0xA700``) the peer answered, or a local reason
    (a ``str`` starting with ``"unreadable:"``, ``"no-context:"``,
    ``"aborted:"`` or ``"timeout:"``).  ``file`` is the path as given.
    ``bytes`` counts the file sizes of the instances sent; ``seconds`` is the
    wall time of the whole call.  Warning statuses (0xB000, 0xB006, 0xB007)
    count as sent.
    """

    sent: int = 0
    failed: list[tuple[str, int | str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """``True`` when every instance was stored."""
        return not self.failed


def describe_status(code: int) -> str:
    """``"0xA700 (Refused: Out of Resources)"``-style text for a DIMSE status code."""
    text = STORAGE_SERVICE_CLASS_STATUS.get(code, (code_to_category(code), ""))[1]
    return f"0x{code:04X} ({text or code_to_category(code)})"
