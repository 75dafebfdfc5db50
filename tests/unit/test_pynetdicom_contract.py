"""Contracts with pynetdicom's private API that the DICOM receiver and sender rely on.

Each test names one hook used by :mod:`clara_ray.dicom.scp` or
:mod:`clara_ray.export.scu`, so a pynetdicom upgrade that moves or changes it
fails here, with the hook in the test's name and message, before any peer test.
"""

from __future__ import annotations

import inspect
import queue
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from pynetdicom import AE, _config, _globals, _handlers, evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from clara_ray.dicom.scp import supported_contexts


def params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def require(condition: bool, hook: str) -> None:
    if not condition:
        pytest.fail(f"pynetdicom changed {hook}, which clara_ray.dicom relies on")


def acceptor() -> Association:
    return Association(AE(), _globals.MODE_ACCEPTOR)


def test_config_flags() -> None:
    for flag in (
        "LOG_REQUEST_IDENTIFIERS",
        "LOG_RESPONSE_IDENTIFIERS",
        "STORE_SEND_CHUNKED_DATASET",
    ):
        require(isinstance(getattr(_config, flag, None), bool), f"_config.{flag}")


def test_globals() -> None:
    require(isinstance(_globals.MODE_ACCEPTOR, str), "_globals.MODE_ACCEPTOR")
    syntaxes = _globals.ALL_TRANSFER_SYNTAXES
    require(
        isinstance(syntaxes, list) and "1.2.840.10008.1.2.1" in syntaxes,
        "_globals.ALL_TRANSFER_SYNTAXES",
    )


def test_standard_handlers_are_bound_on_a_new_server() -> None:
    names = ("dimse_recv", "dimse_sent", "pdu_recv", "pdu_sent")
    events = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)
    ae = AE()
    ae.add_supported_context("1.2.840.10008.1.1")
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        for name, event in zip(names, events, strict=True):
            handler = getattr(_handlers, f"standard_{name}_handler", None)
            bound = [h for h, _ in server.get_handlers(event)]  # type: ignore[misc]
            require(handler is not None and handler in bound, f"_handlers.standard_{name}_handler")
    finally:
        server.shutdown()


def test_server_handlers_map() -> None:
    ae = AE()
    ae.add_supported_context("1.2.840.10008.1.1")

    def echo(event: evt.Event) -> int:
        return 0

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, echo)])
    try:
        handlers = server._handlers
        require(isinstance(handlers, dict), "ThreadedAssociationServer._handlers")
        require(
            handlers[evt.EVT_C_ECHO][0] == echo and handlers[evt.EVT_C_ECHO][1] is None,
            "intervention entries in _handlers",
        )
        require(
            all(isinstance(h, tuple) for h in handlers[evt.EVT_PDU_RECV]),
            "notification entries in _handlers",
        )
        require(server in ae._servers, "AE._servers")
    finally:
        server.shutdown()


def test_make_server_forwards_server_class_and_request_handler() -> None:
    require({"server_class", "kwargs"} <= set(params(AE.make_server)), "AE.make_server")
    server_params = params(ThreadedAssociationServer.__init__)
    require("request_handler" in server_params, "AssociationServer(request_handler=...)")


def test_request_handler_create_association() -> None:
    require(
        callable(getattr(RequestHandler, "_create_association", None)),
        "RequestHandler._create_association",
    )
    for prop in ("ae", "local", "remote"):
        require(isinstance(getattr(RequestHandler, prop, None), property), f"RequestHandler.{prop}")


def test_server_process_request_thread() -> None:
    hook = ThreadedAssociationServer.process_request_thread
    require(
        params(hook) == ["self", "request", "client_address"],
        "ThreadedAssociationServer.process_request_thread",
    )


def test_association_private_attributes() -> None:
    assoc = acceptor()
    require(assoc._server is None, "Association._server")
    require(assoc._accepted_cx == {}, "Association._accepted_cx")
    require(
        params(Association._serve_request) == ["self", "msg", "context_id"],
        "Association._serve_request",
    )
    require(params(Association.run_reactor) == ["self"], "Association.run_reactor")


def test_association_timeouts_are_passed_to_the_dul() -> None:
    assoc = acceptor()
    assoc.dul = DULServiceProvider(assoc)
    assoc.acse_timeout = 7
    assoc.network_timeout = 9
    require(assoc.dul.artim_timer.timeout == 7, "Association.acse_timeout setter (DUL ARTIM timer)")
    require(
        assoc.dul._idle_timer is not None and assoc.dul._idle_timer.timeout == 9,
        "Association.network_timeout setter (DUL idle timer)",
    )


def test_association_socket_hooks() -> None:
    require(params(AssociationSocket.recv) == ["self", "nr_bytes"], "AssociationSocket.recv")
    require(
        params(AssociationSocket._shutdown_socket) == ["self"], "AssociationSocket._shutdown_socket"
    )


def test_dul_run_loop_delay_and_read_pdu_data() -> None:
    dul = DULServiceProvider(acceptor())
    require(dul._run_loop_delay == 0.001, "DULServiceProvider._run_loop_delay")
    require(
        params(DULServiceProvider._read_pdu_data) == ["self"], "DULServiceProvider._read_pdu_data"
    )
    require(
        dul.state_machine.current_state == "Sta1", "DULServiceProvider.state_machine.current_state"
    )
    require(isinstance(dul.to_user_queue, queue.Queue), "DULServiceProvider.to_user_queue")
    require(dul.socket is None, "DULServiceProvider.socket")


def test_acse_acceptor_hooks() -> None:
    require(params(ACSE._negotiate_as_acceptor) == ["self"], "ACSE._negotiate_as_acceptor")
    require(
        params(ACSE.send_reject) == ["self", "result", "source", "diagnostic"], "ACSE.send_reject"
    )
    require(params(ACSE.send_release) == ["self", "is_response"], "ACSE.send_release")
    require(params(ACSE.send_abort) == ["self", "source"], "ACSE.send_abort")
    assoc = acceptor()
    require(
        hasattr(assoc.requestor, "primitive") and hasattr(assoc, "is_rejected"),
        "Association.requestor.primitive",
    )


def test_dimse_message_queue_and_receive_primitive() -> None:
    dimse = DIMSEServiceProvider(acceptor())
    require(dimse.message is None, "DIMSEServiceProvider.message")
    require(isinstance(dimse.msg_queue, queue.Queue), "DIMSEServiceProvider.msg_queue")
    require(
        params(DIMSEServiceProvider.get_msg) == ["self", "block"], "DIMSEServiceProvider.get_msg"
    )
    require(
        params(DIMSEServiceProvider.receive_primitive) == ["self", "primitive"],
        "DIMSEServiceProvider.receive_primitive",
    )


def test_dimse_message_collects_its_data_set_by_write() -> None:
    # StreamedDataset replaces DIMSEMessage.data_set; decode_msg must only write() to it.
    source = inspect.getsource(DIMSEMessage.decode_msg)
    require(isinstance(DIMSEMessage().data_set, BytesIO), "DIMSEMessage.data_set")
    require("self.data_set).write(" in source, "DIMSEMessage.decode_msg writing data_set")


def test_supported_contexts_build() -> None:
    contexts = supported_contexts()
    require(len(contexts) > 100, "AllStoragePresentationContexts")
    require(str(contexts[0].abstract_syntax) == "1.2.840.10008.1.1", "build_context")


def test_associations_bind_the_standard_handlers_themselves() -> None:
    assoc = acceptor()
    bound = [h for h, _ in assoc.get_handlers(evt.EVT_PDU_RECV)]  # type: ignore[misc]
    require(
        _handlers.standard_pdu_recv_handler in bound,
        "Association.__init__ binding the standard handlers (ScpRequestHandler unbinds them)",
    )


def test_dimse_send_msg_encodes_a_store_success_as_the_fast_path_does() -> None:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from clara_ray.dicom.scp.tuning import store_success_command

    require(params(DIMSEServiceProvider.send_msg) == ["self", "primitive", "context_id"],
            "DIMSEServiceProvider.send_msg(primitive, context_id)")  # fmt: skip
    for message_id, sop in ((1, "1.2.3.4"), (65535, "1.2.826.0.1.3680043.8.498.123456789012345")):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        rsp.AffectedSOPInstanceUID = sop
        rsp.Status = 0x0000
        message = C_STORE_RSP()
        message.primitive_to_message(rsp)
        (pdata,) = list(message.encode_msg(1, 16384))
        ((context_id, pdv),) = pdata.presentation_data_value_list
        require(
            context_id == 1 and pdv[:1] == b"\x03" and pdv[1:] == store_success_command(rsp),
            "the encoding of a C-STORE-RSP command set (PromptDimse.send_msg encodes Success)",
        )
        rsp.Status = 0xA700
        assert store_success_command(rsp) is None  # failures go through pynetdicom
        rsp.Status = 0x0000
        rsp.ErrorComment = "x"
        assert store_success_command(rsp) is None


def test_the_acceptor_loop_we_replace_is_pynetdicoms_as_read() -> None:
    """ScpAssociation._run_reactor is pynetdicom's acceptor loop less its 1 ms sleep per
    turn: each check it makes is still pynetdicom's, in the same order, so a pynetdicom
    that changes its loop fails here before it changes behaviour unseen."""
    import inspect

    from pynetdicom.association import Association

    from clara_ray.dicom.scp.association import ScpAssociation
    from clara_ray.dicom.scp.tuning import PromptDimse

    theirs = inspect.getsource(Association._run_reactor)
    ours = inspect.getsource(ScpAssociation._run_reactor)
    steps = [
        "self._reactor_checkpoint.wait()",
        "self.dimse.get_msg(block=False)",
        "self._serve_request(msg",
        "self.acse.is_release_requested()",
        "self.acse.send_release(is_response=True)",
        "evt.EVT_RELEASED",
        "self.acse.is_aborted()",
        "self.dul.receive_pdu(wait=False)",
        "evt.EVT_ABORTED",
        "self.dul.is_alive()",
        "self.dul.idle_timer_expired()",
        'self.network_timeout_response == "A-RELEASE"',
    ]
    for source in (theirs, ours):
        positions = [source.index(step) for step in steps]
        assert positions == sorted(positions)
    assert "time.sleep(0.001)" in theirs
    assert "sleep" not in ours.split('"""')[-1]
    assert PromptDimse.waits_for_messages


def test_data_transfer_actions_the_data_pdu_paths_stand_in_for() -> None:
    from pynetdicom import fsm

    # read_data_pdu has the effect of DT-2 (Sta6 + Evt10) and AdaptiveDul.send_now of DT-1.
    require(fsm.TRANSITION_TABLE[("Evt10", "Sta6")] == "DT-2", "TRANSITION_TABLE Sta6 + Evt10")
    require(fsm.TRANSITION_TABLE[("Evt9", "Sta6")] == "DT-1", "TRANSITION_TABLE Sta6 + Evt9")
    dt2 = inspect.getsource(fsm.DT_2)
    require(
        "dul._recv_pdu.get(False)" in dt2 and "dimse.receive_primitive(" in dt2 and 'return "Sta6"' in dt2,
        "fsm.DT_2 (a P-DATA indication straight to DIMSE)",
    )  # fmt: skip
    dt1 = inspect.getsource(fsm.DT_1)
    require("dul._send(P_DATA_TF(primitive))" in dt1 and 'return "Sta6"' in dt1, "fsm.DT_1")
    dul = DULServiceProvider(acceptor())
    require(isinstance(dul._recv_pdu, queue.Queue), "DULServiceProvider._recv_pdu")
    require(isinstance(dul.event_queue, queue.Queue), "DULServiceProvider.event_queue")
    require(params(DULServiceProvider._send) == ["self", "pdu"], "DULServiceProvider._send")
    require(params(AssociationSocket.send) == ["self", "bytestream"], "AssociationSocket.send")


def test_p_data_tf_is_encoded_as_pynetdicom_encodes_it() -> None:
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from clara_ray.dicom.scp.data_pdus import data_fragments, p_data_tf

    for context_id, value in ((1, b"\x03" + bytes(range(200))), (255, b"\x02")):
        primitive = P_DATA()
        primitive.presentation_data_value_list.append((context_id, value))
        encoded = P_DATA_TF(primitive).encode()
        require(p_data_tf(context_id, value) == encoded, "P_DATA_TF.encode")
        decoded = P_DATA_TF()
        decoded.decode(encoded)
        require(
            decoded.to_primitive().presentation_data_value_list == [(context_id, value)],
            "P_DATA_TF.decode",
        )
    found = data_fragments(memoryview(p_data_tf(7, b"\x02end")[6:]), 7)
    assert found is not None and bytes(found[1] or b"") == b"\x02end"
