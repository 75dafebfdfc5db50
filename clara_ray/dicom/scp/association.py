"""The acceptor association of the Storage SCP and the record its log line is built from.

:class:`ScpAssociation` only adds what the layers (:mod:`.transport`,
:mod:`.acse`, :mod:`.tuning`) need to reach their :class:`StorageScp`; the
request handler in :mod:`.transport` installs those layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association

from clara_ray.config.dicom import AeTitleConfig
from clara_ray.dicom.policy import Rejection
from clara_ray.dicom.spool import GroupHolds

if TYPE_CHECKING:
    from clara_ray.dicom.scp.storage import StorageScp

__all__ = ["AssociationRecord", "ScpAssociation"]


@dataclass
class AssociationRecord:
    """What the end-of-association log line says."""

    peer: str
    port: int
    started: float
    calling: str = "-"
    called: str = "-"
    ae: AeTitleConfig | None = None
    admitted: bool = False
    instances: int = 0
    duplicates: int = 0
    failures: int = 0
    echoes: int = 0
    bytes: int = 0
    unsynced: int = 0  # instances acknowledged but not yet synced (durability "association")
    sync_error: str = ""
    holds: GroupHolds = field(default_factory=GroupHolds)  # groups stored into, held open


class ScpAssociation(Association):
    """An acceptor association that knows its StorageScp and reports its end."""

    def __init__(self, ae: AE, scp: StorageScp, record: AssociationRecord) -> None:
        super().__init__(ae, MODE_ACCEPTOR)
        self.scp = scp
        self.record = record
        self.refused_pdu = ""
        self.rejection: Rejection | None = None

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self.scp._finished(self)
