"""Cores built in a test without Ray: their runner launchers, and their verbs by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clara_ray.core import CoreService


def core_verb(core: CoreService, name: str) -> Callable[..., Any]:
    """The Core verb ``name`` of an in-process Core, as the Core actor serves it: the
    service's own, its export ledger's or its DICOM registry's."""
    if not name.startswith("_"):
        for owner in (core, core.pipelines, core.payloads, core.dicom, core.exports, core.events):
            verb = getattr(owner, name, None)
            if callable(verb):
                return verb
    raise AttributeError(f"the Core has no verb {name!r}")


class NoRunners:
    """The launcher of a Core on which no job may start (export and DICOM benches)."""

    def launch(self, job: Any) -> None:
        raise AssertionError("no job is started on this Core")

    def running_jobs(self) -> set[str]:
        return set()

    def cancel(self, job_id: str, run: int | None = None) -> None:
        pass

    def cluster_capacity(self) -> None:
        return None
