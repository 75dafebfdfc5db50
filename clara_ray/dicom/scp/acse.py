"""The ACSE layer of the Storage SCP: association policy first, release only once synced."""

from __future__ import annotations

from pynetdicom import evt
from pynetdicom.acse import ACSE

from clara_ray.dicom.scp.association import ScpAssociation

__all__ = ["PolicyAcse"]


class PolicyAcse(ACSE):
    """Applies the association policy first, then accepts as the called Clara AE title."""

    def _negotiate_as_acceptor(self) -> None:
        assoc = self.assoc
        if not isinstance(assoc, ScpAssociation):
            super()._negotiate_as_acceptor()
            return
        rq = self.requestor.primitive
        if rq is None:
            assoc.kill()
            return
        self.requestor.ae_title = rq.calling_ae_title
        rejection = assoc.scp._admit(assoc, str(rq.called_ae_title), str(rq.calling_ae_title))
        if rejection is not None:
            self.send_reject(*rejection.codes)
            assoc.is_rejected = True
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        self.acceptor.ae_title = str(rq.called_ae_title).strip()
        super()._negotiate_as_acceptor()

    def send_release(self, is_response: bool = False) -> None:
        """Answer a release only once the association's instances are on disk.

        With durability "association", Success statuses went out before the fsync; if
        the spool cannot be synced now, the association is aborted instead of released,
        so the sender knows its instances are not safely stored and sends them again.
        """
        assoc = self.assoc
        if is_response and isinstance(assoc, ScpAssociation) and not assoc.scp._sync(assoc):
            self.send_abort(0x02)  # A-ABORT from the service provider
            return
        super().send_release(is_response)
