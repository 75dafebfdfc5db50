"""Export scheduling: several exports in flight, bounded per destination and in all.

One dispatcher (:meth:`ExportScheduler.run`, a thread of the DICOM adapter)
claims, for each destination with a free slot, the next export due to that
destination only (``Core.claim_export(..., destination=name)``) and hands it to
a pool of ``workers`` threads.  A destination never has more than
``concurrency_per_destination`` sends in flight, so a PACS that is slow, or
that accepts connections and never answers, holds at most that many threads
while the other destinations' exports go on.  Destinations are served in
turn, one export each per round, starting from a different one at each
dispatch, so that when all ``workers`` are busy no destination is always
first.  The dispatcher runs again as soon as a send ends (a slot is free) and
otherwise every ``period`` seconds: new exports, retries whose backoff has
passed and exports resent by an operator (Pending again) are claimed then.

**Leases.**  Each claim holds its export for ``lease_seconds``.  The send is
given the lease's end, measured before the claim is asked for (so never after
the Core's own ``lease_until``), and stops starting instances in time to end
within it (:func:`~clara_ray.export.scu.overrun_seconds`); a lease therefore
never runs out under a send still going, and an export held by an adapter
that died is claimed again once its lease has run out.

**Removed destinations.**  A destination removed from the configuration is
still asked for: the Core fails its due exports ("destination was deleted").
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clara_ray.config.dicom import DicomSettings, ExportSettings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.export.attempt import run_export
from clara_ray.storage import Storage

__all__ = ["Claim", "Claimed", "ExportScheduler", "Finish", "Send", "core_exports"]

log = logging.getLogger(__name__)

Claimed = dict[str, Any]
"""``Core.claim_export``'s answer: ``{"export": ExportRecord, "destination": {...}}``."""
Claim = Callable[[str, float], Claimed | None]
"""Claim the next export due to a destination, for a lease of so many seconds."""
Send = Callable[[Claimed, float], dict[str, Any]]
"""Send a claimed export whose lease ends at a :func:`time.monotonic` time; its outcome."""
Finish = Callable[[Claimed, dict[str, Any]], None]
"""Record a send's outcome (``Core.export_finished``)."""


class ExportScheduler:
    """Claims exports per destination and sends them on a bounded pool; see the module."""

    def __init__(
        self,
        claim: Claim,
        send: Send,
        finish: Finish,
        settings: ExportSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._claim = claim
        self._send = send
        self._finish = finish
        self.workers = settings.workers
        self.per_destination = settings.concurrency_per_destination
        self.lease_seconds = settings.lease_seconds
        self._clock = clock
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clara-dicom-export")
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._seen: set[str] = set()
        self._turn = 0
        self._wake = threading.Event()
        self._closed = False

    def in_flight(self) -> dict[str, int]:
        """Sends in flight, by destination."""
        with self._lock:
            return {name: n for name, n in self._running.items() if n}

    def dispatch(self, destinations: Iterable[str]) -> int:
        """Claim and start as many exports as the free slots allow; how many were started."""
        names = list(dict.fromkeys(destinations))
        self._seen.update(names)
        names += sorted(self._seen.difference(names))
        if names:
            self._turn = (self._turn + 1) % len(names)
            names = names[self._turn :] + names[: self._turn]
        started = 0
        while names:
            more = []
            for name in names:
                with self._lock:
                    if sum(self._running.values()) >= self.workers:
                        return started
                    if self._running[name] >= self.per_destination:
                        continue
                lease_end = self._clock() + self.lease_seconds
                claimed = self._claim(name, self.lease_seconds)
                if claimed is None:
                    continue
                self._start(name, claimed, lease_end)
                started += 1
                more.append(name)
            names = more
        return started

    def _start(self, name: str, claimed: Claimed, lease_end: float) -> None:
        with self._lock:
            self._running[name] += 1
        try:
            self._pool.submit(self._work, name, claimed, lease_end)
        except RuntimeError:  # the pool was shut down: the export is claimed again later
            self._release(name)
            raise

    def _release(self, name: str) -> None:
        with self._lock:
            self._running[name] -= 1
        self._wake.set()

    def _work(self, name: str, claimed: Claimed, lease_end: float) -> None:
        export_id = claimed["export"].export_id
        try:
            try:
                outcome = self._send(claimed, lease_end)
            except Exception as exc:  # a bug must not leave the export claimed until its lease
                log.exception("export %s to destination %r: the send failed", export_id, name)
                outcome = {
                    "ok": False,
                    "reason": (
                        f"the DICOM adapter failed sending to destination {name!r}: "
                        f"{type(exc).__name__}: {exc} (see the adapter's log)"
                    ),
                    "retry_in": None,
                }
            self._finish(claimed, outcome)
        except Exception:  # the Core stayed unreachable: the lease's end makes it claimable
            log.exception(
                "export %s to destination %r: its outcome could not be recorded; it is sent "
                "again after its lease of %g s",
                export_id,
                name,
                self.lease_seconds,
            )
        finally:
            self._release(name)

    def run(self, destinations: Callable[[], Iterable[str]], period: float = 1.0) -> None:
        """Dispatch until :meth:`close`: after each send and every ``period`` seconds."""
        while not self._closed:
            self._wake.clear()
            try:
                self.dispatch(destinations())
            except Exception:  # the Core is unreachable: logged, and asked again
                log.exception("DICOM export: claiming exports failed; again in %g s", period)
            self._wake.wait(period)

    def close(self) -> None:
        """Stop dispatching; sends in flight end on their own (their leases bound them)."""
        self._closed = True
        self._wake.set()
        self._pool.shutdown(wait=False)


def core_exports(
    core: CoreClient,
    storage: Storage,
    settings: DicomSettings,
    client_tls: Callable[[], ssl.SSLContext],
    worker: str,
) -> ExportScheduler:
    """The adapter's scheduler: claims from the Core as ``worker``, sends with
    :func:`~clara_ray.export.attempt.run_export`, reports to the Core."""

    def claim(destination: str, lease_seconds: float) -> Claimed | None:
        # one claim id per claim: a call Ray retries against a restarted Core gets the same export
        claim_id = uuid.uuid4().hex
        return core.claim_export(worker, lease_seconds, claim_id=claim_id, destination=destination)

    def send(claimed: Claimed, lease_end: float) -> dict[str, Any]:
        return run_export(storage, settings, claimed, client_tls, lease_end=lease_end)

    def finish(claimed: Claimed, outcome: dict[str, Any]) -> None:
        core.export_finished(claimed["export"].export_id, **outcome)

    return ExportScheduler(claim, send, finish, settings.export)
