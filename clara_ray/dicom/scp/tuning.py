"""Latency tuning of pynetdicom's DUL and DIMSE layers, and streamed C-STORE data sets.

:class:`AdaptiveDul` polls the socket faster while an association is busy;
:class:`PromptDimse` picks each decoded message up as soon as it is ready and
gives each C-STORE data set a :class:`~clara_ray.dicom.receive.StreamedDataset`.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider

from clara_ray.dicom.receive import StreamedDataset
from clara_ray.dicom.scp.association import ScpAssociation

__all__ = ["AdaptiveDul", "PromptDimse"]

_MESSAGE_WAIT = 0.002
_BUSY_POLL = 0.0001
_BUSY_WINDOW = 0.25


class PromptDimse(DIMSEServiceProvider):
    """Lets the acceptor's polling loop wait briefly on the message queue.

    pynetdicom's acceptor loop sleeps 1 ms, then polls for a decoded message without
    blocking; waiting up to ``_MESSAGE_WAIT`` s for one instead picks each C-STORE up as
    soon as it is decoded (measured here: ~20% more instances/s on one association).
    """

    def get_msg(self, block: bool = False) -> tuple[Any, Any]:
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(timeout=_MESSAGE_WAIT)
        except queue.Empty:
            return None, None

    def receive_primitive(self, primitive: Any) -> None:
        """Give each new message a :class:`StreamedDataset` to collect its data set in."""
        assoc = self.assoc
        if self.message is None and isinstance(assoc, ScpAssociation):
            message = DIMSEMessage()
            message.data_set = StreamedDataset(
                message, lambda rq: assoc.scp.handler.open_stream(assoc, rq), assoc.scp.max_instance
            )
            self.message = message
        super().receive_primitive(primitive)


class AdaptiveDul(DULServiceProvider):
    """Polls the socket every ``_BUSY_POLL`` s while an established association is busy,
    at pynetdicom's pace (1 ms) otherwise.

    pynetdicom's DUL thread sleeps ``_run_loop_delay`` whenever the socket has nothing to
    read; at 1 ms, each next C-STORE request was noticed ~1.2 ms after our response went
    out (measured), against ~0.45 ms at 0.1 ms.  Idle and not yet associated connections
    keep the slow pace, so they cost no more CPU than stock pynetdicom.
    """

    def __init__(self, assoc: Association) -> None:
        self._busy_until = 0.0
        self._idle_delay = 0.001
        super().__init__(assoc)

    @property
    def _run_loop_delay(self) -> float:
        return _BUSY_POLL if time.monotonic() < self._busy_until else self._idle_delay

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        self._idle_delay = value

    def _read_pdu_data(self) -> None:
        super()._read_pdu_data()
        if self.state_machine.current_state == "Sta6":  # established: data transfer
            self._busy_until = time.monotonic() + _BUSY_WINDOW
