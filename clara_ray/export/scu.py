"""Storage SCU: send DICOM files to a destination with C-STORE, and C-ECHO it.

Plain code, no Ray: the DICOM adapter's export wraps it (with the retry policy
of :mod:`clara_ray.export.policy`).

**What is proposed.**  Only each file's File Meta Information is read (SOP
Class, SOP Instance and Transfer Syntax UIDs); the files are sent from disk
as encoded, never decoded or re-encoded.  Every (SOP Class, Transfer Syntax)
pair present gets one presentation context proposing exactly that transfer
syntax: an acceptor picks the first syntax of its *own* list among those
proposed, so a context offering several could be answered with one that the
file is not in.  Files in Explicit or Implicit VR Little Endian get one more
context with the other of the two, as a fallback for peers that refuse the
file's own: such a file is then decoded and re-encoded by pynetdicom (the only
case where a file is decoded).  An association carries at most 128 contexts
(the protocol's limit); a file set needing more is sent over several
associations, one after the other (:func:`plan_associations`).

**Outcomes.**  :func:`send_files` returns a :class:`SendResult` when the
association(s) were established, also when some instances were refused (their
status or reason is in :attr:`SendResult.failed`); it raises
:class:`DicomSendError` when the destination cannot be reached or rejects the
association, naming the destination and the reason.  An association is always
released, or aborted when anything went wrong, never left open.

**Speed.**  TCP_NODELAY is set on the socket as soon as it opens, we accept
PDUs of ``max_pdu`` (128 KiB by default; what we send is split to the peer's
advertised maximum), and files stream from disk.  One association sends one
instance at a time (DICOM's default, no asynchronous operations window).

**pynetdicom specifics.**  ``pynetdicom._config.STORE_SEND_CHUNKED_DATASET`` is
set to ``True`` (the process-wide switch that makes ``send_c_store(path)``
stream the file's bytes instead of decoding it); nothing else of pynetdicom's
configuration is touched.  Each association's reactor is made to give back
DIMSE responses it would otherwise drop (see :func:`_keep_responses`), a
pynetdicom 3.0 race that otherwise costs a DIMSE timeout now and then.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from clara_ray.config.dicom import DestinationConfig
from clara_ray.export.outcome import (
    REASON_ABORTED,
    REASON_NO_CONTEXT,
    REASON_TIMEOUT,
    REASON_UNREADABLE,
    DicomSendError,
    SendResult,
    describe_status,
    where,
)
from clara_ray.export.send_plan import (
    AssociationPlan,
    FileEntry,
    Pair,
    fallback_syntax,
    plan_associations,
    read_entry,
)

__all__ = ["echo", "overrun_seconds", "send_files"]

logger = logging.getLogger(__name__)

_SUCCESS = 0x0000
_STORED = (STATUS_SUCCESS, STATUS_WARNING)  # a warning status means the instance was stored


_PAST_DEADLINE = (
    f"{REASON_TIMEOUT}: not sent before the export's lease ran out "
    "(dicom.export.lease_seconds bounds one attempt)"
)


def overrun_seconds(timeout: float) -> float:
    """The longest :func:`send_files` runs past its ``deadline`` with this ``timeout``.

    Checked just before the deadline, an association request may still take
    two tries (each a connect and an answer, ``2 * timeout``, then a wait for
    the association's thread, ``timeout``) and the diagnosis of a failed
    connection (a connect and a TLS handshake, about 5 s each); the association
    is then released (``timeout``) and its thread joined (``timeout``).  An instance started before the deadline takes
    ``timeout`` at most, followed by the same release and join.
    """
    return 8 * timeout + 20


def _keep_responses(assoc: Association) -> None:
    """Make the association's reactor hand back DIMSE responses it takes by mistake.

    pynetdicom 3.0 pauses its reactor thread while ``send_c_store`` waits for
    the response, but the pause can be observed stale (``_is_paused`` still
    true from the previous pause while the reactor thread is waking up); the
    reactor then takes the C-STORE-RSP off the queue, logs "Received
    unexpected C-STORE service message" and drops it, and the send waits
    until the DIMSE timeout (seen here about once in a few hundred instances
    against a fast storescp on a loaded machine).  A requestor that sends one
    request at a time expects every response, so a response the reactor finds
    is put back on the queue for the waiting ``send_*`` call.
    """
    serve = assoc._serve_request
    queue = assoc.dimse.msg_queue

    def serve_or_return(msg: Any, context_id: int) -> None:
        if not msg.is_valid_request and msg.is_valid_response:
            logger.debug("gave back a %s response the reactor took", msg.msg_type)
            queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_return  # type: ignore[method-assign]


def _check_tls(destination: DestinationConfig, ssl_context: ssl.SSLContext | None) -> None:
    if destination.tls and ssl_context is None:
        raise ValueError(
            f"{where(destination)} has tls=True; pass ssl_context "
            "(the DICOM adapter builds it from dicom.tls)"
        )


def _nodelay(event: evt.Event) -> None:
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _diagnose_connect(destination: DestinationConfig, timeout: float) -> str:
    """Why a TCP connection to ``destination`` fails (pynetdicom only logs it)."""
    try:
        with socket.create_connection((destination.host, destination.port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _diagnose_tls(destination: DestinationConfig, context: ssl.SSLContext, timeout: float) -> str:
    """Why a TLS handshake with ``destination`` fails (pynetdicom only logs it)."""
    address = (destination.host, destination.port)
    try:
        with (
            socket.create_connection(address, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=destination.host),
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the peer's certificate is not trusted ({exc.verify_message}); its CA must be in "
            "dicom.tls.ca_certificates, or in the system CA store when that is unset "
            "(SSL_CERT_FILE / SSL_CERT_DIR)"
        )
    except ssl.SSLError as exc:
        return f"TLS error {exc.reason or exc}"
    except OSError as exc:
        return (
            f"the peer ended the handshake ({exc.strerror or exc or type(exc).__name__}): "
            "not a TLS port, or it refused our certificate"
        )


def _associate(
    ae: AE,
    destination: DestinationConfig,
    contexts: Sequence[Any],
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    max_pdu: int,
) -> Association:
    """An established association, or :class:`DicomSendError` saying why not.

    A request the peer closes without an answer is made once more: peers that reject and
    close at once (DCMTK-based ones such as Orthanc) can reset the connection before their
    A-ASSOCIATE-RJ is read on a loaded machine, and the second request reads the reason.
    """
    options: dict[str, Any] = {"ssl_context": ssl_context, "timeout": timeout, "max_pdu": max_pdu}
    try:
        return _associate_once(ae, destination, contexts, **options)
    except DicomSendError as exc:
        if exc.kind != "aborted":
            raise
    logger.info(
        "%s closed the association request without an answer; asking once more",
        where(destination),
    )
    return _associate_once(ae, destination, contexts, **options)


def _associate_once(
    ae: AE,
    destination: DestinationConfig,
    contexts: Sequence[Any],
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    max_pdu: int,
) -> Association:
    """One association request: established, or :class:`DicomSendError` saying why not."""
    _check_tls(destination, ssl_context)
    opened: list[bool] = []

    def on_open(event: evt.Event) -> None:
        opened.append(True)
        _nodelay(event)

    tls_args = (ssl_context, destination.host) if ssl_context is not None else None
    started = time.monotonic()
    assoc = ae.associate(
        destination.host,
        destination.port,
        contexts=list(contexts),
        ae_title=destination.ae_title,
        max_pdu=max_pdu,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
    )
    if assoc.is_established:
        _keep_responses(assoc)
        return assoc
    try:
        rsp = assoc.acceptor.primitive
        if assoc.is_rejected and rsp is not None:
            codes = (rsp.result or 0, rsp.result_source or 0, rsp.diagnostic or 0)
            raise DicomSendError(
                destination,
                "rejected",
                f"association rejected ({rsp.result_str}, source {rsp.source_str}): "
                f"{rsp.reason_str}",
                reject=codes,
            )
        if not opened:
            reason = _diagnose_connect(destination, min(timeout, 5.0))
            if ssl_context is not None and not reason:
                why = _diagnose_tls(destination, ssl_context, min(timeout, 5.0))
                raise DicomSendError(
                    destination,
                    "tls",
                    "unreachable over TLS: the TCP connection opens but the TLS handshake "
                    f"failed: {why or 'certificate, CA or protocol mismatch'}",
                )
            raise DicomSendError(
                destination, "unreachable", f"unreachable: {reason or 'connection failed'}"
            )
        if rsp is not None and getattr(rsp, "result", None) == 0:
            offered = ", ".join(f"{UID(s).name} in {UID(t).name}" for s, t in _pairs(contexts))
            raise DicomSendError(
                destination,
                "no-context",
                f"association accepted but no presentation context was; proposed: {offered}",
            )
        if time.monotonic() - started >= timeout:
            raise DicomSendError(
                destination, "timeout", f"no answer to the association request in {timeout:g} s"
            )
        raise DicomSendError(
            destination, "aborted", "the peer aborted or closed the association request"
        )
    finally:
        if assoc.is_established:  # defensive: never leave one open
            assoc.abort()
        _join(assoc, timeout)


def _join(assoc: Association, timeout: float) -> None:
    """Wait for the association's thread, which ends right after a release, abort or reject."""
    if assoc.is_alive():
        assoc.join(timeout)


def _pairs(contexts: Sequence[Any]) -> list[Pair]:
    return [(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in contexts]


def _make_ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    return ae


def _send_one(
    assoc: Association, entry: FileEntry, accepted: set[Pair], timeout: float
) -> int | str:
    """The status of one C-STORE (an int), or a local reason (a str)."""
    pair = (entry.sop_class, entry.transfer_syntax)
    other = fallback_syntax(entry.transfer_syntax)
    started = time.monotonic()
    try:
        if pair in accepted:
            status = assoc.send_c_store(entry.path)
        elif other and (entry.sop_class, other) in accepted:
            status = assoc.send_c_store(dcmread(entry.path))
        else:
            return (
                f"{REASON_NO_CONTEXT}: peer accepted no context for "
                f"{UID(entry.sop_class).name} in {UID(entry.transfer_syntax).name}"
            )
    except (OSError, ValueError, AttributeError, InvalidDicomError) as exc:
        return f"{REASON_UNREADABLE}: {exc}"
    if "Status" in status:
        return int(status.Status)
    if time.monotonic() - started >= timeout:
        return f"{REASON_TIMEOUT}: no C-STORE response in {timeout:g} s; association aborted"
    return f"{REASON_ABORTED}: association ended before the C-STORE response"


def _send_plan(
    ae: AE,
    destination: DestinationConfig,
    plan: AssociationPlan,
    result: SendResult,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    max_pdu: int,
    progress: Callable[[int], None] | None,
    deadline: float | None,
) -> None:
    contexts = [build_context(sop, ts) for sop, ts in plan.contexts]
    started = time.monotonic()
    assoc = _associate(
        ae, destination, contexts, ssl_context=ssl_context, timeout=timeout, max_pdu=max_pdu
    )
    sent = nbytes = failed = 0
    released = False
    try:
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        }
        for entry in plan.files:
            if not assoc.is_established:
                outcome: int | str = f"{REASON_ABORTED}: not sent, the association had ended"
            elif deadline is not None and time.monotonic() >= deadline:
                outcome = _PAST_DEADLINE
            else:
                outcome = _send_one(assoc, entry, accepted, timeout)
            if isinstance(outcome, int) and code_to_category(outcome) in _STORED:
                sent += 1
                nbytes += entry.size
            else:
                failed += 1
                result.failed.append((entry.name, outcome))
            if progress is not None:
                progress(result.sent + sent + len(result.failed))
        if assoc.is_established:
            assoc.release()
            released = True
    finally:
        if assoc.is_established:
            assoc.abort()
        _join(assoc, timeout)
        result.sent += sent
        result.bytes += nbytes
        seconds = time.monotonic() - started
        logger.info(
            "C-STORE to %s: %d sent, %d failed, %.1f MB in %.2f s (%.0f instances/s)%s",
            where(destination),
            sent,
            failed,
            nbytes / 1e6,
            seconds,
            sent / seconds if seconds > 0 else 0.0,
            "" if released else "; association aborted",
        )
        if failed:
            name, status = result.failed[-failed]
            logger.warning(
                "C-STORE to %s: %d of %d instances not stored; first: %s: %s",
                where(destination),
                failed,
                len(plan.files),
                name,
                describe_status(status) if isinstance(status, int) else status,
            )


def send_files(
    destination: DestinationConfig,
    files: Sequence[Path | str],
    *,
    calling_ae: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30,
    max_pdu: int = 131072,
    progress: Callable[[int], None] | None = None,
    deadline: float | None = None,
) -> SendResult:
    """C-STORE ``files`` to ``destination`` as ``calling_ae``; see the module docstring.

    ``timeout`` bounds the TCP connect and each wait for an association or
    DIMSE message; ``max_pdu`` is the largest PDU we accept (what we send is
    split to the peer's advertised maximum).  ``progress`` is called after each
    file with the number of files handled so far (sent or failed).  Files that
    cannot be read are reported in :attr:`SendResult.failed` and not sent.

    With ``deadline`` (a :func:`time.monotonic` time), no association is
    requested and no instance is sent after it; the files left are reported as
    failed (``"timeout:"``, retryable) and the call returns at most
    :func:`overrun_seconds` ``(timeout)`` after the deadline.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    if max_pdu < 0:
        raise ValueError(f"max_pdu must be 0 (unlimited) or a positive size, got {max_pdu}")
    _check_tls(destination, ssl_context)
    _config.STORE_SEND_CHUNKED_DATASET = True
    started = time.monotonic()
    result = SendResult()
    entries = []
    for path in files:
        try:
            entries.append(read_entry(path))
        except (OSError, ValueError) as exc:
            result.failed.append((str(path), f"{REASON_UNREADABLE}: {exc}"))
    ae = _make_ae(calling_ae, timeout)
    try:
        for plan in plan_associations(entries):
            if deadline is not None and time.monotonic() >= deadline:
                result.failed.extend((entry.name, _PAST_DEADLINE) for entry in plan.files)
                if progress is not None:
                    progress(result.sent + len(result.failed))
                continue
            _send_plan(
                ae,
                destination,
                plan,
                result,
                ssl_context=ssl_context,
                timeout=timeout,
                max_pdu=max_pdu,
                progress=progress,
                deadline=deadline,
            )
    except DicomSendError as exc:
        result.seconds = time.monotonic() - started
        exc.result = result
        raise
    finally:
        ae.shutdown()
    result.seconds = time.monotonic() - started
    return result


def echo(
    destination: DestinationConfig,
    *,
    calling_ae: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> float:
    """C-ECHO ``destination``; the seconds from connecting to the C-ECHO response.

    Raises :class:`DicomSendError` when the destination cannot be reached,
    rejects the association or answers with a failure status.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    _check_tls(destination, ssl_context)
    ae = _make_ae(calling_ae, timeout)
    started = time.monotonic()
    try:
        assoc = _associate(
            ae,
            destination,
            [build_context(Verification)],
            ssl_context=ssl_context,
            timeout=timeout,
            max_pdu=16384,
        )
        try:
            status = assoc.send_c_echo()
            seconds = time.monotonic() - started
            if "Status" not in status:
                raise DicomSendError(destination, "aborted", "no C-ECHO response")
            if status.Status != _SUCCESS:
                raise DicomSendError(
                    destination, "rejected", f"C-ECHO answered {describe_status(status.Status)}"
                )
            assoc.release()
        finally:
            if assoc.is_established:
                assoc.abort()
            _join(assoc, timeout)
    finally:
        ae.shutdown()
    logger.info("C-ECHO to %s: %.1f ms", where(destination), seconds * 1000)
    return seconds
