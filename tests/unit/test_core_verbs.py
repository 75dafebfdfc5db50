"""The Core's verbs are the same in CoreService, the CoreActor and CoreClient."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clara_ray.contracts.core_client import CoreClient
from clara_ray.core.actor import CoreActor
from clara_ray.core.service import CoreService

# CoreService's public methods that the actor calls itself, never a caller of the Core
_SERVICE_INTERNAL = frozenset({"recover", "wait_for_launches", "dicom_seed"})
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
    assert "claim_export" in service and "dicom_config" in service  # the mixins' verbs too
    assert _public(CoreActor, _ACTOR_OWN) == service
    assert _public(CoreClient) == service
