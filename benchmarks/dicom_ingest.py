"""DICOM ingest: dcmtk ``storescu`` -> storescp (C++), Orthanc, and the clara-ray adapter.

One run writes the 300-slice 512x512 CT sample study (157 MB) once, then sends
it with dcmtk ``storescu`` (``TCP_NODELAY=1``, ``-pdu 131072``) over one
association, and over two parallel associations (two ``storescu`` processes,
each sending half of the files), to:

* dcmtk ``storescp --fork -pdu 131072 +B`` (a fresh output folder per run);
* Orthanc 1.10 (a fresh server and storage folder per run, ``TCP_NODELAY=1``);
* the clara-ray DICOM adapter, its default 2 receiving processes sharing the
  port, on a local Ray, twice: with durability ``instance`` (the default: each
  instance fsynced before its Success status) and ``association`` (the
  association's instances synced before its release is answered).  Each run
  sends to an AE title of its own whose group timeout (3600 s) keeps any job
  from starting while the benchmark runs.

A run's time is the wall time from starting the sender(s) to their exit.  Every
run is verified: all instances must be in storescp's folder, in Orthanc (REST
API) or in the adapter's spool (by SOP Instance UID), or the benchmark raises.
Runs are interleaved (storescp, Orthanc, the adapters per round, Ray up throughout)
so that drift in the machine's load or disk latency hits all receivers alike;
each figure is the median, minimum and maximum over ``repeats`` rounds
(:func:`benchmarks.stats.spread`), each ratio the spread of the rounds' ratios
(``ratio_<adapter>_over_<receiver>_<n>_association[s]``: instances/s of the adapter over
those of the other receiver in the same round); MB is 10^6 bytes.  The result also
gives how the default adapter's receivers shared each run and
the disk's cost of one durable write (write + fsync of file and folder).
Progress goes to stderr.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.stats import ratio_spread, spread

ROOT = Path(__file__).resolve().parent.parent
SLICES = 300
ASSOCIATIONS = (1, 2)
PIPELINE = ROOT / "pipelines" / "ct-lung-bone.yaml"
GROUP_TIMEOUT_S = 3600.0  # no group closes, so no job starts, while the benchmark runs
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SEND_TIMEOUT_S = 120.0


def _progress(message: str) -> None:
    print(f"[dicom_ingest] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with code {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def _halves(files: Sequence[Path], parts: int) -> list[list[Path]]:
    size = -(-len(files) // parts)
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


def _send(port: int, called_ae: str, files: Sequence[Path], associations: int) -> float:
    """Seconds for ``associations`` parallel storescu processes to send ``files``."""
    commands = [
        [
            "storescu",
            "-aet",
            "BENCHSCU",
            "-aec",
            called_ae,
            "-pdu",
            "131072",
            "127.0.0.1",
            str(port),
            *map(str, part),
        ]
        for part in _halves(files, associations)
    ]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(command, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for command in commands
    ]
    errors = []
    try:
        for sender in senders:
            _, err = sender.communicate(timeout=SEND_TIMEOUT_S)
            if sender.returncode != 0:
                errors.append(err.decode(errors="replace")[-2000:])
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"storescu to {called_ae} on port {port} failed:\n" + "\n".join(errors))
    return elapsed


def _wait_count(count: Any, expected: int, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = count()
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {got} instances arrived, {expected} were sent")
        time.sleep(0.05)


# -- receivers ---------------------------------------------------------------------------------


def _storescp_run(files: Sequence[Path], associations: int, work: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="storescp-", dir=work))
    port = _free_port()
    process = subprocess.Popen(
        [
            "storescp",
            "--fork",
            "-aet",
            "STORESCP",
            "-pdu",
            "131072",
            "+B",
            "-od",
            str(out),
            str(port),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_port(port, process)
        elapsed = _send(port, "STORESCP", files, associations)
        _wait_count(lambda: sum(1 for p in out.iterdir() if p.is_file()), len(files), "storescp")
        return elapsed
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(out, ignore_errors=True)


def _orthanc_run(files: Sequence[Path], associations: int, work: Path) -> float:
    from tests.peer.orthanc import OrthancServer

    server = OrthancServer(Path(tempfile.mkdtemp(prefix="orthanc-", dir=work)) / "orthanc")
    try:
        server.start()  # fresh storage folder, TCP_NODELAY=1, MaximumPduLength 131072
        elapsed = _send(server.dicom_port, server.aet, files, associations)
        _wait_count(lambda: len(server.instances()), len(files), "Orthanc")
        return elapsed
    finally:
        server.stop(graceful=False)  # its storage is thrown away
        shutil.rmtree(server.workdir.parent, ignore_errors=True)


class _Adapter:
    """The platform with the DICOM adapter (2 receivers) in ``durability`` mode, on the
    local Ray (started by the first one)."""

    def __init__(self, work: Path, ae_titles: Sequence[str], durability: str) -> None:
        import ray

        from clara_ray.client import PlatformClient
        from clara_ray.config.settings import load_settings
        from clara_ray.dicom.actors import get_or_create_adapter
        from clara_ray.platform import get_or_create_core

        self.settings = load_settings(
            env={
                "CLARA_RAY_DATA_DIR": str(work / f"data-{durability}"),
                "CLARA_RAY_DICOM__DURABILITY": durability,
                "CLARA_RAY_RAY__NAMESPACE": f"bench{uuid.uuid4().hex[:12]}",
                "CLARA_RAY_SERVE__ENABLED": "false",
                "CLARA_RAY_DICOM__PORT": str(_free_port()),
                "CLARA_RAY_DICOM__DISK_RESERVE_MB": "0",
                "CLARA_RAY_DICOM__REJECT_UNKNOWN_SOURCES": "false",
            }
        )
        if not ray.is_initialized():
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            )
        self.client = PlatformClient.of_actor(self.settings, get_or_create_core(self.settings))
        self.handle = get_or_create_adapter(self.settings)
        status = ray.get(self.handle.status.remote(), timeout=120)
        self.receivers = len(status["receivers"])
        self.splits: list[list[int]] = []  # instances per receiver, per run
        pipeline = self.client.create_pipeline(PIPELINE).name
        for ae in ae_titles:
            self.client.core.dicom_put(
                "aetitle",
                {"ae_title": ae, "pipelines": [pipeline], "timeout": GROUP_TIMEOUT_S},
            )
        deadline = time.monotonic() + 30
        while not set(ae_titles) <= set(ray.get(self.handle.status.remote())["aetitles"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the adapter did not load the benchmark's AE titles in 30 s")
            time.sleep(0.2)

    @property
    def port(self) -> int:
        return self.settings.dicom.port

    def spooled(self, ae_title: str) -> set[str]:
        """SOP Instance UIDs of the complete instances in the spool for ``ae_title``."""
        from clara_ray.dicom.spool.names import aet_folder

        spool = self.settings.spool_dir
        found = set()
        for state in ("incoming", "closing"):
            folder = spool / state / aet_folder(ae_title)
            if folder.is_dir():
                found |= {p.stem for p in folder.glob("*/*.dcm") if not p.name.startswith(".")}
        return found

    def receiver_stats(self) -> list[dict[str, Any]]:
        import ray

        return list(ray.get(self.handle.status.remote())["receivers"])

    def run(self, ae_title: str, files: Sequence[Path], sop_uids: set[str], n: int) -> float:
        before = [r["instances"] for r in self.receiver_stats()]
        elapsed = _send(self.port, ae_title, files, n)
        after = [r["instances"] for r in self.receiver_stats()]
        self.splits.append([b - a for a, b in zip(before, after, strict=True)])
        got = self.spooled(ae_title)
        if got != sop_uids:
            raise RuntimeError(
                f"adapter lost data: {len(sop_uids - got)} of {len(sop_uids)} instances sent to "
                f"{ae_title} are missing from the spool ({len(got - sop_uids)} unexpected)"
            )
        return elapsed


# -- the benchmark ------------------------------------------------------------------------------


def _figures(seconds: list[float], instances: int, size: int) -> dict[str, Any]:
    """Median and range over the runs of instances/s, MB/s and seconds."""
    return {
        "instances_per_s": spread([instances / s for s in seconds], 1),
        "mb_per_s": spread([size / s / 1e6 for s in seconds], 1),
        "seconds": spread(seconds),
    }


def _rates(seconds: list[float], instances: int) -> list[float]:
    return [instances / s for s in seconds]


def _key(n: int) -> str:
    return f"{n}_association" + ("s" if n > 1 else "")


def _fsync_ms(folder: Path, size: int, samples: int = 30) -> float:
    """Median ms to write ``size`` bytes, fsync the file and its folder (the spool's floor)."""
    data = os.urandom(size)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    times = []
    try:
        for i in range(samples):
            start = time.perf_counter()
            fd = os.open(folder / f"probe{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dfd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(dfd)
    return round(statistics.median(times) * 1e3, 2)


def run(repeats: int = 5) -> dict[str, Any]:
    """Send the study ``repeats`` times per receiver and association count; figures and ratios.

    Runs are interleaved (storescp, Orthanc, adapter, for 1 then 2 associations, per round)
    so that drift in this machine's load or disk latency hits every receiver alike.
    """
    import pydicom
    import ray

    from clara_ray.sample import write_sample_study

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests.peer.orthanc
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    try:
        _progress(f"writing the {SLICES}-slice sample study")
        files = sorted(write_sample_study(work / "study", slices=SLICES))
        size = sum(f.stat().st_size for f in files)
        uid_of = {f: str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        sop_uids = set(uid_of.values())
        if len(sop_uids) != len(files):
            raise RuntimeError("the sample study has duplicate SOP Instance UIDs")
        probe = work / "fsync-probe"
        probe.mkdir()
        fsync_ms = _fsync_ms(probe, size // len(files))
        shutil.rmtree(probe)

        adapters = {"adapter": "instance", "adapter_association": "association"}
        receivers = ("storescp", "orthanc", *adapters)
        seconds = {name: {_key(n): [] for n in ASSOCIATIONS} for name in receivers}
        _progress("starting Ray, the Core and the DICOM adapters")
        ae_titles = ["BENCHWARM", *(f"BENCH{n}R{r}" for n in ASSOCIATIONS for r in range(repeats))]
        try:
            running = {name: _Adapter(work, ae_titles, mode) for name, mode in adapters.items()}
            warm = files[:20]
            for adapter in running.values():
                adapter.run("BENCHWARM", warm, {uid_of[f] for f in warm}, 2)  # start-up costs
                adapter.splits.clear()
            splits: dict[str, list[list[int]]] = {_key(n): [] for n in ASSOCIATIONS}
            for r in range(repeats):
                for n in ASSOCIATIONS:
                    row = seconds["storescp"][_key(n)]
                    row.append(_storescp_run(files, n, work))
                    seconds["orthanc"][_key(n)].append(_orthanc_run(files, n, work))
                    for name, adapter in running.items():
                        adapter_s = adapter.run(f"BENCH{n}R{r}", files, sop_uids, n)
                        seconds[name][_key(n)].append(adapter_s)
                    splits[_key(n)].append(running["adapter"].splits[-1])
                    _progress(
                        f"round {r + 1}/{repeats}, {n} association(s): "
                        + ", ".join(f"{x} {seconds[x][_key(n)][-1]:.3f} s" for x in receivers)
                        + f" (adapter's instances per receiver {splits[_key(n)][-1]})"
                    )
            receiver_count = running["adapter"].receivers
        finally:
            ray.shutdown()

        result: dict[str, Any] = {
            "benchmark": (
                f"DICOM ingest: dcmtk storescu (TCP_NODELAY, -pdu 131072) of a {len(files)}-slice "
                f"512x512 CT study ({size / 1e6:.0f} MB), 1 and 2 parallel associations, "
                f"median and range of {repeats} interleaved runs"
            ),
            "instances": len(files),
            "megabytes": round(size / 1e6, 1),
            "adapter_durability": {
                "adapter": (
                    "instance: each instance durable (data and directory entry: one fsync of "
                    "a pre-created slot file) before Success"
                ),
                "adapter_association": (
                    "association: the association's instances synced (syncfs) before its "
                    "release is answered"
                ),
            },
            "adapter_receivers": receiver_count,
            "adapter_instances_per_receiver_per_run": splits,
            "disk_write_fsync_ms_per_instance": fsync_ms,
        }
        for name, by_n in seconds.items():
            result[name] = {k: _figures(v, len(files), size) for k, v in by_n.items()}
        for name in adapters:
            for other in ("orthanc", "storescp"):
                for n in ASSOCIATIONS:
                    k = _key(n)
                    result[f"ratio_{name}_over_{other}_{k}"] = ratio_spread(
                        _rates(seconds[name][k], len(files)), _rates(seconds[other][k], len(files))
                    )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    import json

    result = run()
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "dicom_ingest.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
