"""Who may associate, and the DICOM codes the receiver answers with.

:func:`decide` is plain code (no sockets): given the A-ASSOCIATE-RQ's AE titles,
the peer's address, the configuration and the free disk space, it returns the
A-ASSOCIATE-RJ to send (PS3.8 9.3.4, table 9-21), or None to go on negotiating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from clara_ray.config.dicom import DicomConfig, DicomSettings

__all__ = [
    "AssociationDecision",
    "RejectReason",
    "RejectResult",
    "RejectSource",
    "Rejection",
    "StoreStatus",
    "decide",
]


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ Result."""

    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ Source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class RejectReason:
    """A-ASSOCIATE-RJ Reason/Diag. codes, named with the source they belong to (the same
    number means different things under different sources, so this is no enum)."""

    USER_NO_REASON = 1
    USER_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    USER_CALLING_AE_NOT_RECOGNIZED = 3
    USER_CALLED_AE_NOT_RECOGNIZED = 7
    PRESENTATION_TEMPORARY_CONGESTION = 1
    PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: ``result``, ``source`` and ``reason`` as PS3.8 codes them, and a
    message for the log (AE titles and addresses only)."""

    result: int
    source: int
    reason: int
    message: str

    @property
    def codes(self) -> tuple[int, int, int]:
        return (int(self.result), int(self.source), int(self.reason))


AssociationDecision: TypeAlias = Rejection | None
"""What :func:`decide` returns: the rejection to send, or None to accept."""


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3, PS3.7 C)."""

    Success = 0x0000
    WarningCoercionOfDataElements = 0xB000
    WarningElementsDiscarded = 0xB006
    WarningDataSetDoesNotMatchSopClass = 0xB007
    RefusedSopClassNotSupported = 0x0122
    RefusedNotAuthorized = 0x0124
    ProcessingFailure = 0x0110
    DuplicateSopInstance = 0x0111
    RefusedOutOfResources = 0xA700
    ErrorDataSetDoesNotMatchSopClass = 0xA900
    ErrorCannotUnderstand = 0xC000


def decide(
    called_ae: str,
    calling_ae: str,
    peer_host: str,
    config: DicomConfig,
    settings: DicomSettings,
    free_bytes: int,
    *,
    active_associations: int = 0,
    resolved: Mapping[str, frozenset[str]] | None = None,
) -> AssociationDecision:
    """The rejection for an association request, or None to accept it.

    Checked in this order: the called AE title must be a configured Clara AE
    title; with ``settings.reject_unknown_sources`` the (calling AE, host) pair
    must be a configured source (a source's host name matches the addresses
    ``resolved`` gives it); the spool must have ``disk_reserve_mb`` free;
    fewer than ``settings.max_associations`` associations may be established
    (``active_associations`` counts them, this request excluded).
    """
    called, calling = called_ae.strip(), calling_ae.strip()
    if config.aetitle(called) is None:
        return Rejection(
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.USER_CALLED_AE_NOT_RECOGNIZED,
            f"called AE title {called!r} is not a configured Clara AE title",
        )
    if settings.reject_unknown_sources and not config.is_known_source(calling, peer_host, resolved):
        return Rejection(
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.USER_CALLING_AE_NOT_RECOGNIZED,
            f"calling AE title {calling!r} from {peer_host} is not a configured source "
            f"(add it with `clara-ray dicom create source {calling} --host {peer_host}`)",
        )
    reserve = settings.disk_reserve_mb * 1024 * 1024
    if free_bytes < reserve:
        return Rejection(
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            RejectReason.PRESENTATION_LOCAL_LIMIT_EXCEEDED,
            f"spool disk low: {free_bytes // (1024 * 1024)} MiB free, "
            f"reserve is {settings.disk_reserve_mb} MiB",
        )
    if active_associations >= settings.max_associations:
        return Rejection(
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            RejectReason.PRESENTATION_LOCAL_LIMIT_EXCEEDED,
            f"{active_associations} associations established, "
            f"the limit is {settings.max_associations}",
        )
    return None
