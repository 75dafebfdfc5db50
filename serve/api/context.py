"""What every route handler of the REST API shares: the settings, storage and the Core.

Handlers get the :class:`ApiContext` of their app as a parameter of type :data:`Context`.  Core
verbs are awaited (no thread of the replica blocks on the Core); storage I/O runs in a
worker thread (:meth:`ApiContext.io`), so the event loop keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

import ray
from fastapi import Depends, HTTPException, Request
from ray.exceptions import RayTaskError
from starlette.concurrency import run_in_threadpool

from clara_ray.config.settings import Settings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.storage import Storage

__all__ = ["ApiContext", "Context", "call_actor", "context"]

P = ParamSpec("P")
T = TypeVar("T")
_CALL_TIMEOUT = 300.0


class ApiContext:
    """The settings, storage and Core of one API app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage)

    def actor(self) -> Any:
        """The Core actor's handle; 503 when it is not running."""
        try:
            return ray.get_actor(CORE_ACTOR_NAME, namespace=self.settings.ray.namespace)
        except ValueError:
            raise HTTPException(503, "the clara-ray Core is not running") from None

    def client(self) -> CoreClient:
        """A blocking Core client, for plain code that runs in a worker thread."""
        return CoreClient(
            CORE_ACTOR_NAME,
            self.settings.ray.namespace,
            retry_seconds=0,
            call_timeout=_CALL_TIMEOUT,
            actor=self.actor(),
        )

    async def core(
        self, verb: Callable[Concatenate[CoreClient, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call the Core verb ``verb`` (a :class:`CoreClient` method, named as the actor's)
        awaiting the actor's answer.  An error raised in the Core (a ClaraError, a ValueError
        for a bad value) is raised as itself, for the app's error handlers."""
        result: T = await call_actor(self.actor(), verb.__name__, *args, **kwargs)
        return result

    async def io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking (storage) code in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)


async def call_actor(actor: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Await ``actor.method``; an error raised in the actor (a ClaraError, a ValueError for a
    bad value) is raised as itself, for the app's error handlers."""
    try:
        return await getattr(actor, method).remote(*args, **kwargs)
    except RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise


def context(request: Request) -> ApiContext:
    """The dependency that gives a handler its app's :class:`ApiContext`."""
    ctx: ApiContext = request.app.state.context
    return ctx


Context = Annotated[ApiContext, Depends(context)]
"""A handler parameter of this type gets its app's :class:`ApiContext`."""
