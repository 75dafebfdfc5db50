"""An export bench for peer tests: a real Core (SQLite), results in storage, silent peers.

:class:`Bench` holds a :class:`CoreService` on a temporary database and a local
:class:`Storage`; exports are recorded in it as the Core records them when a job
ends Healthy, and :func:`clara_ray.export.workers.core_exports` sends them
exactly as the DICOM adapter does (the Core is called in-process instead of
through Ray, one call at a time as the Core actor serves them).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clara_ray.config.dicom import DestinationConfig
from clara_ray.contracts.core_client import CoreClient
from clara_ray.contracts.records import ExportRecord
from clara_ray.core import CoreService, SQLiteStore
from clara_ray.export.manifest import result_path
from clara_ray.storage import Storage
from tests.launchers import NoRunners, core_verb

__all__ = ["Bench", "black_hole"]


class Bench(CoreClient):
    """A Core and storage under ``root``, called as a :class:`CoreClient` in-process."""

    def __init__(self, root: Path) -> None:
        super().__init__("in-process", "bench")
        self.storage = Storage(str(root / "storage"))
        self.store = SQLiteStore(root / "state" / "clara.db")
        self.core = CoreService(self.store, self.storage, NoRunners())
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return core_verb(self.core, method)(*args, **kwargs)

    def close(self) -> None:
        self.store.close()

    def add_destination(self, destination: DestinationConfig) -> None:
        self.dicom_put("destination", destination.model_dump())

    def add_export(self, export_id: str, destination: str, files: list[Path]) -> None:
        """Results of job ``job-<export_id>`` (copies of ``files``) to send to ``destination``."""
        job_id = f"job-{export_id}"
        refs = []
        for file in files:
            ref = f"export/{file.name}"
            self.storage.write_bytes(result_path(self.storage, job_id, ref), file.read_bytes())
            refs.append(ref)
        now = time.time()
        self.store.put_export(
            ExportRecord(
                export_id=export_id,
                job_id=job_id,
                operator="export",
                destination=destination,
                files=refs,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
            )
        )

    def state(self, export_id: str) -> str:
        return str(self.get_export(export_id).state)


@contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never answers; yields the port.

    On exit the listener closes first (a new connection is refused), then the
    connections it holds (their peers see the connection end).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()
