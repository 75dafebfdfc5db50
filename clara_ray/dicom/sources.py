"""The addresses of sources configured by host name.

A source's ``host`` may be an IP address or a host name.  An association comes
from an address, so a host name only matches once resolved: :class:`SourceAddresses`
resolves every configured host name to all its addresses (IPv4 and IPv6) when
the configuration is loaded or changes, and again every ``refresh_seconds`` (the
receiver runs :meth:`SourceAddresses.run` in a thread), so a PACS whose address
changes in DNS is followed.  Admission reads the last result and never waits for
DNS.  A name that does not resolve keeps the addresses it last had, with a
warning naming it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Mapping

from clara_ray.config.dicom import DicomConfig, normal_address

__all__ = ["REFRESH_SECONDS", "SourceAddresses", "resolve"]

log = logging.getLogger(__name__)
REFRESH_SECONDS = 60.0

Resolver = Callable[[str], frozenset[str]]


def resolve(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to (canonical spelling); raises OSError if none."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return frozenset(normal_address(str(info[4][0])) for info in infos)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class SourceAddresses:
    """Host name -> addresses, for :meth:`DicomConfig.is_known_source`; thread-safe."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self._resolver = resolver
        self._addresses: dict[str, frozenset[str]] = {}
        self._config = DicomConfig()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> Mapping[str, frozenset[str]]:
        return self._addresses

    def update(self, config: DicomConfig) -> None:
        """Resolve the host names of ``config``'s sources that are new to it (now)."""
        with self._lock:
            self._config = config
        names = {s.host for s in config.sources if not _is_address(s.host)}
        self._resolve(names - set(self._addresses), names)

    def refresh(self) -> None:
        """Resolve every configured host name again."""
        with self._lock:
            config = self._config
        names = {s.host for s in config.sources if not _is_address(s.host)}
        self._resolve(names, names)

    def _resolve(self, todo: set[str], keep: set[str]) -> None:
        fresh: dict[str, frozenset[str]] = {}
        for name in sorted(todo):
            try:
                fresh[name] = self._resolver(name)
            except OSError as exc:
                log.warning(
                    "DICOM source host %r does not resolve (%s); it matches %s until it does",
                    name,
                    exc,
                    "its last addresses" if name in self._addresses else "no peer",
                )
        with self._lock:
            merged = {k: v for k, v in self._addresses.items() if k in keep}
            merged.update(fresh)
            self._addresses = merged

    def run(self, stop: threading.Event, period: float = REFRESH_SECONDS) -> None:
        """Refresh every ``period`` seconds until ``stop`` is set."""
        while not stop.wait(period):
            try:
                self.refresh()
            except Exception:  # the last addresses stay in use; logged, retried next period
                log.exception("refreshing the addresses of DICOM sources failed")
