"""The DICOM adapter as Ray actors: thin wrappers over the plain classes of this package.

``clara-dicom`` (detached, restartable) holds the spool, closes groups into
payloads and jobs, and sends exports (several at once, bounded per destination:
:mod:`clara_ray.export.workers`); it starts ``receivers`` DicomReceiver
actors, separate processes that each run a Storage SCP on the same port
(SO_REUSEPORT, new connections evened out among them by a ConnectionBalancer),
because one Python process tops out near 300 instances/s.
Receivers share the adapter's fate: when it restarts, it starts new ones, and
the spool on disk carries everything that was acknowledged.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

import ray

from clara_ray.config.dicom import DicomConfig
from clara_ray.config.settings import Settings
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.placement import CORE_ACTOR_NAME, on_head_node, platform_actor
from clara_ray.dicom.balance import ConnectionBalancer, balancing_supported
from clara_ray.dicom.ingest import GroupCloser
from clara_ray.dicom.scp import StorageScp
from clara_ray.dicom.spool import Spool
from clara_ray.dicom.tls import ClientTls, server_ssl_context
from clara_ray.errors import NotFoundError
from clara_ray.export.scu import echo
from clara_ray.export.workers import core_exports
from clara_ray.phi import keep_patient_data_out_of_logs
from clara_ray.storage import Storage

__all__ = ["ADAPTER_NAME", "DicomAdapter", "DicomReceiver", "get_or_create_adapter"]

ADAPTER_NAME = "clara-dicom"
log = logging.getLogger(__name__)


def _server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.dicom.tls
    return server_ssl_context(tls) if tls.enabled else None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class DicomReceiver:
    """One receiving process: a Storage SCP writing into the shared spool."""

    def __init__(self, settings: Settings, config: DicomConfig, index: int) -> None:
        keep_patient_data_out_of_logs()
        logging.basicConfig(level=settings.log_level)
        server_ssl = _server_ssl_context(settings)
        spool = Spool(settings.spool_dir)
        count = settings.dicom.receivers
        balancer = (
            ConnectionBalancer(spool.root / "receivers.load", index, count)
            if count > 1 and balancing_supported()
            else None
        )
        self.scp = StorageScp(
            settings.dicom, config, spool, ssl_context=server_ssl, balancer=balancer
        )
        self.port = self.scp.start()

    def update_config(self, config: DicomConfig) -> None:
        self.scp.update_config(config)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "port": self.port, **self.scp.stats()}


class DicomAdapter:
    def __init__(self, settings: Settings) -> None:
        keep_patient_data_out_of_logs()
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self.core = CoreClient(
            CORE_ACTOR_NAME, settings.ray.namespace, settings.core.report_retry_seconds
        )
        self.storage = Storage(settings.storage)
        self.spool = Spool(settings.spool_dir)
        self.config: DicomConfig = self.core.dicom_config()
        self.client_tls = ClientTls(settings.dicom.tls)
        on_head = on_head_node(settings.scheduling.head_resource)
        self.receivers = [
            DicomReceiver.options(**on_head).remote(settings, self.config, index)  # type: ignore[attr-defined]
            for index in range(settings.dicom.receivers)
        ]
        ray.get([r.info.remote() for r in self.receivers])
        self.closer = GroupCloser(self.spool, self.storage, self.core)
        self._stop = threading.Event()
        self._worker = f"dicom-adapter-{os.getpid()}"
        for target, period in ((self._refresh_config, 2.0), (self._ingest, 1.0)):
            threading.Thread(
                target=self._loop,
                args=(target, period),
                daemon=True,
                name=f"clara-dicom-{target.__name__.strip('_')}",
            ).start()
        self.exports = core_exports(
            self.core, self.storage, settings.dicom, self.client_tls, self._worker
        )
        threading.Thread(
            target=self.exports.run,
            args=(lambda: [d.name for d in self.config.destinations], 1.0),
            daemon=True,
            name="clara-dicom-export",
        ).start()
        log.info(
            "DICOM adapter listening on %s:%d as %s with %d receivers",
            settings.dicom.host,
            settings.dicom.port,
            settings.dicom.ae_title,
            settings.dicom.receivers,
        )

    def _loop(self, step: Callable[[], bool | None], period: float) -> None:
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:  # a failing step is logged and retried; the adapter keeps serving
                log.exception("DICOM adapter: %s failed", step.__name__)
                busy = False
            if not busy:
                self._stop.wait(period)

    def _refresh_config(self) -> None:
        config = self.core.dicom_config()
        if config != self.config:
            self.config = config
            ray.get([r.update_config.remote(config) for r in self.receivers])
            log.info(
                "DICOM configuration reloaded: %d AE titles, %d sources, %d destinations",
                len(config.aetitles),
                len(config.sources),
                len(config.destinations),
            )

    def _ingest(self) -> None:
        self.closer.tick(self.config)

    def status(self) -> dict[str, Any]:
        d = self.settings.dicom
        return {
            "host": d.host,
            "port": d.port,
            "ae_title": d.ae_title,
            "tls": d.tls.enabled,
            "durability": d.durability,
            "receivers": ray.get([r.info.remote() for r in self.receivers]),
            "exports_in_flight": self.exports.in_flight(),
            "aetitles": [a.ae_title for a in self.config.aetitles],
        }

    def pids(self) -> list[int]:
        """This process and the receivers' (for operators and tests)."""
        return [
            os.getpid(),
            *[i["pid"] for i in ray.get([r.info.remote() for r in self.receivers])],
        ]

    def echo(self, destination: str) -> float:
        config: DicomConfig = self.core.dicom_config()
        dest = config.destination(destination)
        if dest is None:
            known = ", ".join(d.name for d in config.destinations) or "none"
            raise NotFoundError(f"no DICOM destination '{destination}' (destinations: {known})")
        return echo(
            dest,
            calling_ae=self.settings.dicom.ae_title,
            ssl_context=self.client_tls() if dest.tls else None,
        )


DicomAdapterRemote = ray.remote(DicomAdapter)


def get_or_create_adapter(settings: Settings) -> Any:
    return DicomAdapterRemote.options(
        **platform_actor(ADAPTER_NAME, settings.ray.namespace),
        num_cpus=0,
        **on_head_node(settings.scheduling.head_resource),
        max_concurrency=8,
    ).remote(settings)
