"""The Core's verbs are the same in CoreService, the CoreActor and CoreClient."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clara_ray.contracts.core_client import CoreClient
from clara_ray.core.actor import CoreActor
from clara_ray.core.catalog import PayloadCatalog, PipelineCatalog
from clara_ray.core.dicom_registry import DicomRegistry
from clara_ray.core.events import EventLog
from clara_ray.core.service import CoreService
from clara_ray.export.ledger import ExportLedger

# public methods of CoreService and its parts that the Core calls itself, never its callers
_SERVICE_INTERNAL = frozenset({"recover", "wait_for_launches", "dicom_seed", "record_job_exports"})
# the actor's own methods, about the actor rather than the Core's state
_ACTOR_OWN = frozenset({"ping", "settings_dump"})


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature, less the ``_ray_trace_ctx`` that ``ray.remote`` adds to an
    actor class's methods."""
    signature = inspect.signature(inspect.unwrap(fn))
    return signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != "_ray_trace_ctx"]
    )


def _public(cls: type, leave_out: frozenset[str] = frozenset()) -> dict[str, inspect.Signature]:
    return {
        name: _signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in leave_out
    }


def test_actor_service_and_client_have_the_same_verbs_with_the_same_parameters() -> None:
    service = _public(CoreService, _SERVICE_INTERNAL)
    for part in (PipelineCatalog, PayloadCatalog, DicomRegistry, ExportLedger, EventLog):
        verbs = _public(part, _SERVICE_INTERNAL)
        assert not verbs.keys() & service.keys(), f"{part.__name__} repeats a verb"
        service |= verbs
    assert "claim_export" in service and "dicom_config" in service
    assert _public(CoreActor, _ACTOR_OWN) == service
    assert _public(CoreClient) == service
