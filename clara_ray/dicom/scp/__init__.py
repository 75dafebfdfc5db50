"""The Storage SCP: C-ECHO and C-STORE into the spool, guarded for a hospital network.

:class:`StorageScp` (:mod:`.storage`) runs a pynetdicom association server in
a thread.  It is built from subclasses of pynetdicom's layers, one module per
layer as pynetdicom keeps them, handed to ``AE.make_server`` (no module patching):

* :mod:`.transport`: ``Server`` binds with SO_REUSEPORT (several receiving
  processes share one port; with a :class:`~clara_ray.dicom.balance.ConnectionBalancer`,
  a busier receiver hands a new connection to an idler one), sets TCP_NODELAY on
  accepted sockets, does the TLS handshake in the connection's own thread under
  the ACSE timeout (an idle TLS peer cannot stall the accept loop), and, when
  more connections than the limit wait without an association, closes the
  oldest of them (idle sockets cannot lock peers out).  ``ScpRequestHandler``
  builds each association with ``GuardedSocket`` (refuses a PDU whose header
  declares more than ``max(max_pdu, 64 KiB) + 6`` bytes before reading it, and
  reads with few large ``recv_into`` calls) and the layers below, without
  pynetdicom's standard (debug logging) event handlers;
* :mod:`.acse`: ``PolicyAcse`` applies :func:`~clara_ray.dicom.policy.decide`
  and answers with its A-ASSOCIATE-RJ, or accepts as the called Clara AE title;
  it answers a release only once the association's instances are synced;
* :mod:`.tuning`: ``AdaptiveDul`` waits on the socket while an association is busy,
  writes the PDUs that carry only data set fragments straight from one reused read
  buffer into the spool file (:mod:`.data_pdus`: no pynetdicom PDU objects, copies or
  state machine for them) and sends a C-STORE Success from the handler's thread;
  ``PromptDimse`` streams each C-STORE data set into a spool temp file (or slot) as
  its fragments arrive (:mod:`clara_ray.dicom.receive`), up to ``dicom.max_instance_mb``,
  and encodes plain C-STORE Success responses itself (no pydicom per response);
* :mod:`.handlers`: the C-STORE handler never decodes the data set: it peeks at
  the encoded bytes of that file, checks the AE title's SOP class filters, and
  returns Success only after :meth:`Spool.store_temp` named the file in its
  group, durable (durability ``instance``: one fsync of a pre-created slot, see
  :mod:`clara_ray.dicom.spool.slots`) or to be synced before the release is
  answered (``association``).  The association holds each group it stored
  into open (:class:`~clara_ray.dicom.spool.GroupHolds`) until it ends.

Each association ends with exactly one INFO line (AE titles, peer, counts,
bytes, duration, outcome) on the ``clara_ray.dicom.scp`` logger; no patient
data is ever logged.
"""

from clara_ray.dicom.scp.contexts import TRANSFER_SYNTAXES, supported_contexts
from clara_ray.dicom.scp.storage import StorageScp

__all__ = ["TRANSFER_SYNTAXES", "StorageScp", "supported_contexts"]
