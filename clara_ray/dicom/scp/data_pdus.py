"""P-DATA-TF PDUs that carry only a C-STORE data set, taken off the socket without
pynetdicom's PDU objects.

Of the PDUs of a 512 KiB CT instance sent in 128 KiB PDUs, all but the first (the
command) carry only data set fragments.  pynetdicom reads each into a fresh buffer,
copies it four more times (``bytes()``, the PDU's and the item's slices, the fragment
without its control header) and passes it through its event queue and state machine
(Sta6 + Evt10: action DT-2, a P-DATA indication to DIMSE), whose only effect for such a
PDU is one ``write`` of each fragment into the message's data set.  :func:`read_data_pdu`
has that same effect with one read into a reused buffer and no copy: it writes each
fragment straight into the :class:`~clara_ray.dicom.receive.StreamedDataset` of the
C-STORE request in progress, and gives a PDU that ends the data set to DIMSE as a
P-DATA primitive, as DT-2 does.

It takes a PDU only where that changes nothing but the cost: the association is in data
transfer (Sta6) with no event or PDU waiting in the DUL, the request's command set is
decoded and its data set streams to the spool, the PDU is a well-formed P-DATA-TF within
the size limit whose items are all data set fragments on the request's presentation
context (a last fragment only as the final item), and nothing listens to the PDU, data or
state-machine events that the path does not raise.  Any other PDU is put back in front of
the socket's stream (:meth:`~.transport.GuardedSocket.unread`), and pynetdicom reads,
checks and answers it exactly as before.  :func:`p_data_tf` encodes the one-item PDU
that :meth:`~.tuning.AdaptiveDul.send_now` sends a response in.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Protocol

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from clara_ray.dicom.receive import StreamedDataset

__all__ = ["PduStream", "data_fragments", "p_data_tf", "read_data_pdu"]

_PYNETDICOM_LOG = logging.getLogger("pynetdicom")
_PDU_HEADER = struct.Struct(">BBI")  # PDU type, reserved, length
_ITEM_HEADER = struct.Struct(">IB")  # item length, presentation context ID
_P_DATA_TF = 0x04
_COMMAND, _LAST = 0x01, 0x02  # the message control header's two significant bits
_EVENTS_NOT_RAISED = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)


class PduStream(Protocol):
    """What :func:`read_data_pdu` reads from (a :class:`~.transport.GuardedSocket`)."""

    @property
    def limit(self) -> int: ...
    @property
    def has_unread(self) -> bool: ...

    def recv(self, nr_bytes: int) -> bytearray: ...
    def recv_reused(self, nr_bytes: int) -> memoryview: ...
    def unread(self, data: bytes | bytearray | memoryview) -> None: ...


def p_data_tf(context_id: int, value: bytes) -> bytes:
    """The encoded P-DATA-TF PDU of one presentation data value (control header included)."""
    item = _ITEM_HEADER.pack(len(value) + 1, context_id) + value
    return _PDU_HEADER.pack(_P_DATA_TF, 0, len(item)) + item


def data_fragments(
    items: memoryview, context_id: int
) -> tuple[list[memoryview], memoryview | None] | None:
    """The data set fragments of a P-DATA-TF PDU's ``items``.

    Returns the fragments that are not the data set's last (without their message
    control header), and the whole presentation data value (control header included)
    of the last fragment when the final item is one; None unless every item is
    well formed, carries a data set fragment on ``context_id``, and only the final
    one is a last fragment.
    """
    fragments: list[memoryview] = []
    offset, end = 0, len(items)
    if end == 0:
        return None
    while offset < end:
        if end - offset < _ITEM_HEADER.size + 1:
            return None
        length, item_context = _ITEM_HEADER.unpack_from(items, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end or item_context != context_id:
            return None
        control = items[offset + 5]
        if control & _COMMAND:
            return None
        if control & _LAST:
            return (fragments, items[offset + 5 : stop]) if stop == end else None
        fragments.append(items[offset + 6 : stop])
        offset = stop
    return fragments, None


def read_data_pdu(dul: DULServiceProvider, stream: PduStream) -> bool:
    """Take the next PDU off ``stream`` with DT-2's effect if it carries only data set
    fragments of the C-STORE request in progress; False, with the PDU left unread for
    pynetdicom, for any other PDU or state (see the module's docstring)."""
    assoc = dul.assoc
    dimse = assoc.dimse
    message = dimse.message
    if (
        dul.state_machine.current_state != "Sta6"
        or type(message) is not C_STORE_RQ
        or not isinstance(message.data_set, StreamedDataset)
        or stream.has_unread
        or not dul.event_queue.empty()
        or not dul._recv_pdu.empty()
        or any(assoc.get_handlers(event) for event in _EVENTS_NOT_RAISED)
    ):
        return False
    context_id: int = message.context_id  # type: ignore[assignment]
    try:
        header = stream.recv(_PDU_HEADER.size)
        if len(header) < _PDU_HEADER.size:
            stream.unread(header)
            return False
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        if pdu_type != _P_DATA_TF or length > stream.limit:
            stream.unread(header)
            return False
        body = stream.recv_reused(length)
    except (OSError, TimeoutError):
        _PYNETDICOM_LOG.error("Connection closed before the entire PDU was received")
        dul.event_queue.put("Evt17")  # as pynetdicom's own read
        return True
    found = data_fragments(body, context_id) if len(body) == length else None
    if found is None:
        stream.unread(bytes(header) + bytes(body))
        return False
    middle, last = found
    data_set: Any = message.data_set
    for fragment in middle:
        data_set.write(fragment)
    if last is not None:
        primitive = P_DATA()
        primitive.presentation_data_value_list.append((context_id, bytes(last)))
        dimse.receive_primitive(primitive)
    return True
