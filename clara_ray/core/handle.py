"""Calling the Core actor from other actors, riding out its restarts."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from clara_ray.errors import ClaraError

__all__ = ["CoreHandle"]

log = logging.getLogger(__name__)


class CoreHandle:
    """Looks the Core up by name and retries calls while it restarts.

    A ClaraError raised inside the Core is raised here as itself (not retried).
    After ``retry_seconds`` without an answer the last error is raised.
    """

    def __init__(self, name: str, namespace: str, retry_seconds: float = 120.0) -> None:
        self.name = name
        self.namespace = namespace
        self.retry_seconds = retry_seconds
        self._actor: Any = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                if self._actor is None:
                    self._actor = ray.get_actor(self.name, namespace=self.namespace)
                return ray.get(getattr(self._actor, method).remote(*args, **kwargs), timeout=60)
            except RayTaskError as exc:
                if isinstance(exc.cause, ClaraError):
                    raise exc.cause from None
                raise
            except (RayActorError, GetTimeoutError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("Core unavailable for %s (%s); retrying", method, type(exc).__name__)
                self._actor = None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
