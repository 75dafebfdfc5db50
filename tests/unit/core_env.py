"""A Core built without Ray for unit tests: a recording launcher, a fake clock, an
environment that restarts the Core over the same database, and helpers that drive a job."""

from __future__ import annotations

from pathlib import Path

from clara_ray.contracts.records import JobRecord
from clara_ray.contracts.resources import ClusterCapacity
from clara_ray.core import CoreService, SQLiteStore
from clara_ray.export.manifest import MANIFEST_NAME, ExportManifest
from clara_ray.storage import Storage

DIAMOND = (Path(__file__).resolve().parent.parent / "pipelines" / "diamond.yaml").read_text()
OPERATORS = ["source", "left", "right", "join"]


class FakeLauncher:
    """Records launches and cancels; runners stay 'alive' until told otherwise.

    ``unknown`` makes it answer that it cannot tell which runners run; ``capacity`` is
    the cluster it reports (None: unknown, so admission counts jobs only).
    """

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.canceled: list[str] = []
        self.alive: set[str] = set()
        self.fail_with: Exception | None = None
        self.unknown = False
        self.capacity: ClusterCapacity | None = None

    def launch(self, job: JobRecord) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.launched.append(job.job_id)
        self.alive.add(job.job_id)

    def running_jobs(self) -> set[str] | None:
        return None if self.unknown else set(self.alive)

    def cancel(self, job_id: str, run: int | None = None) -> None:
        self.canceled.append(job_id)
        self.alive.discard(job_id)

    def cluster_capacity(self) -> ClusterCapacity | None:
        return self.capacity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Env:
    """A Core with its store file, storage and launcher; ``restart()`` builds a new Core."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "state" / "clara.db"
        self.storage = Storage(str(tmp_path / "storage"))
        self.launcher = FakeLauncher()
        self.clock = Clock()
        self.stores: list[SQLiteStore] = []
        self.core = self._new_core(max_concurrent_jobs=2)

    def _new_core(self, max_concurrent_jobs: int) -> CoreService:
        store = SQLiteStore(self.db)
        self.stores.append(store)
        return CoreService(
            store,
            self.storage,
            self.launcher,
            max_concurrent_jobs=max_concurrent_jobs,
            clock=self.clock,
        )

    def restart(
        self, launcher: FakeLauncher | None = None, max_concurrent_jobs: int = 2
    ) -> CoreService:
        self.core.wait_for_launches(timeout=10)
        self.stores[-1].close()
        if launcher is not None:
            self.launcher = launcher
        self.core = self._new_core(max_concurrent_jobs)
        return self.core

    def launched(self) -> list[str]:
        """The launches so far, once the Core's launch thread has tried all it was given."""
        assert self.core.wait_for_launches(timeout=10)
        return self.launcher.launched

    def recover(self) -> CoreService:
        """``recover()`` the current Core and let its launches run."""
        self.core.recover()
        assert self.core.wait_for_launches(timeout=10)
        return self.core

    def close(self) -> None:
        self.core.wait_for_launches(timeout=10)
        for store in self.stores:
            store.close()


def queue(core: CoreService, job_id: str, priority: str = "normal") -> JobRecord:
    """Create and start a job; returned once its launch (if admitted) has been tried."""
    core.create_job(job_id, "diamond", "pay-1", priority=priority)
    core.start_job(job_id)
    assert core.wait_for_launches(timeout=10)
    return core.get_job(job_id)


def states(core: CoreService, *job_ids: str) -> list[str]:
    return [str(core.get_job(j).state) for j in job_ids]


def with_export_manifest(env: Env, job_id: str, destination: str = "PACS") -> None:
    """Configure ``destination`` and write the manifest an export operator leaves."""
    env.core.dicom.dicom_put(
        "destination", {"name": destination, "ae_title": "ORTHANC", "host": "pacs", "port": 4242}
    )
    results = env.storage.results(job_id, "join")
    results.write_bytes("seg.dcm", b"\0" * 132 + b"DICM")
    manifest = ExportManifest(destinations=(destination,), files=("join/seg.dcm",))
    results.write_text(MANIFEST_NAME, manifest.to_json())


def finish_operators(core: CoreService, job_id: str) -> None:
    for op in OPERATORS:
        core.operator_started(job_id, op, started_at=1.0, node_id=None, node_ip=None, gpu_ids=[])
        core.operator_stopped(job_id, op, status="Healthy", ended_at=2.0)
