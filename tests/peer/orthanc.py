"""A real Orthanc PACS for tests and benchmarks: started in the foreground, always stopped.

Usage, as a context manager (also outside pytest, e.g. in a benchmark)::

    with OrthancServer(tmp_path / "orthanc") as pacs:
        send_files(pacs.destination(), files, calling_ae="CLARA")
        assert len(pacs.instances()) == len(files)

or as a fixture of a test module::

    orthanc = orthanc_fixture(modalities={"clara": ("CLARA", "127.0.0.1", 11112)})

Each server gets its own JSON configuration, a fresh storage folder and free
HTTP and DICOM ports on 127.0.0.1, and runs with ``TCP_NODELAY=1`` in its
environment (without it Orthanc 1.10 stalls ~45 ms per DIMSE response on
loopback).  HTTP goes through :mod:`urllib` only.  A missing
``/usr/sbin/Orthanc`` is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from clara_ray.config.dicom import DestinationConfig

__all__ = ["ORTHANC", "OrthancError", "OrthancServer", "orthanc_fixture"]

ORTHANC = "/usr/sbin/Orthanc"
"""Where Debian's ``orthanc`` package installs the server."""

_START_DEADLINE_S = 20.0
_START_ATTEMPTS = 3  # a free port may be taken between probing and Orthanc's bind
_STOP_TIMEOUT_S = 10.0


class OrthancError(RuntimeError):
    """Orthanc is missing, did not start, or its REST API answered with an error."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """One Orthanc process with its own configuration and storage; see the module docstring.

    ``modalities`` maps a name to ``(AE title, host, port)`` (Orthanc's
    ``DicomModalities``); ``config`` entries override or extend the generated
    configuration.  ``workdir`` holds the configuration, the storage and
    ``orthanc.log``; without it a temporary folder is made and removed on stop.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        overwrite_instances: bool = True,
        config: Mapping[str, Any] | None = None,
        executable: str = ORTHANC,
    ) -> None:
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.overwrite_instances = overwrite_instances
        self.extra_config = dict(config or {})
        self.executable = executable
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="orthanc-"))
        self.http_port = 0
        self.dicom_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # -- life cycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _config(self) -> dict[str, Any]:
        storage = self.workdir / "db"
        return {
            "Name": "TESTPACS",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {name: list(m) for name, m in self.modalities.items()},
            "DicomAssociationCloseDelay": 0,
            "OverwriteInstances": self.overwrite_instances,
            "Plugins": [],
            "MaximumPduLength": 131072,
            "SaveJobs": False,
            **self.extra_config,
        }

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until ``GET /system`` answers; raises :class:`OrthancError`."""
        if self._process is not None:
            raise OrthancError(f"Orthanc already runs on {self.base_url}")
        if not Path(self.executable).is_file():
            raise OrthancError(
                f"{self.executable} is not installed: expected the Debian package 'orthanc' "
                "(apt-get install -y orthanc)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = ""
        for _ in range(_START_ATTEMPTS):
            problem = self._try_start()
            if not problem:
                return self
        message = f"Orthanc did not start: {problem}\n{self.log_tail()}"
        self.stop()
        raise OrthancError(message)

    def _try_start(self) -> str:
        """Start once on fresh ports; ``""`` when up, else why not (the process is gone)."""
        self.http_port, self.dicom_port = _free_port(), _free_port()
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self._config(), indent=2))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.executable, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "TCP_NODELAY": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            try:
                self.get("/system", timeout=2)
                return ""
            except (OrthancError, urllib.error.URLError, ConnectionError) as exc:
                if self._process.poll() is not None:
                    code = self._process.returncode
                    self._process = None
                    return f"it exited with code {code} ({exc})"
                if time.monotonic() > deadline:
                    self._terminate()
                    return f"no answer from {self.base_url}/system in {_START_DEADLINE_S:g} s"
            time.sleep(0.05)

    def _terminate(self, graceful: bool = True) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if not graceful:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)

    def stop(self, *, graceful: bool = True) -> None:
        """Stop Orthanc; idempotent.  Removes a temporary workdir.

        Graceful: SIGTERM, then SIGKILL after 10 s (Orthanc 1.10 takes ~3.5 s
        to stop its HTTP and DICOM servers).  Not graceful: SIGKILL at once,
        for servers whose storage is thrown away anyway.
        """
        try:
            self._terminate(graceful)
        finally:
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- REST API -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        content_type: str = "application/json",
    ) -> Any:
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method=method,
            headers={"Content-Type": content_type} if body is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read()
                is_json = response.headers.get_content_type() == "application/json"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise OrthancError(f"{method} {path} answered HTTP {exc.code}: {detail}") from exc
        if not is_json:
            return data.decode()
        return json.loads(data) if data else None

    def get(self, path: str, *, timeout: float = 30) -> Any:
        """``GET path`` on the REST API: decoded JSON, or text for other content types."""
        return self._request("GET", path, None, timeout)

    def post(self, path: str, body: Any, *, timeout: float = 30) -> Any:
        """``POST path`` with a JSON body: decoded JSON, or text for other content types."""
        return self._request("POST", path, json.dumps(body).encode(), timeout)

    def upload(self, path: Path) -> str:
        """Store a DICOM file through the REST API (``POST /instances``); its Orthanc id."""
        answer = self._request("POST", "/instances", path.read_bytes(), 30, "application/dicom")
        return str(answer["ID"])

    def instances(self) -> list[str]:
        """Orthanc ids of every instance stored (``GET /instances``)."""
        return list(self.get("/instances"))

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """Main tags by keyword (``GET /instances/{id}/simplified-tags``)."""
        return dict(self.get(f"/instances/{instance_id}/simplified-tags"))

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every instance stored."""
        return {self.instance_tags(i)["SOPInstanceUID"] for i in self.instances()}

    def find(self, study_uid: str) -> list[str]:
        """Orthanc ids of the instances of study ``study_uid`` (``POST /tools/find``)."""
        answer = self.post(
            "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        )
        return list(answer)

    def destination(self, name: str = "PACS", *, ae_title: str | None = None) -> DestinationConfig:
        """A :class:`DestinationConfig` pointing at this server's DICOM port."""
        return DestinationConfig(
            name=name, ae_title=ae_title or self.aet, host="127.0.0.1", port=self.dicom_port
        )


def orthanc_fixture(
    *, graceful_stop: bool = False, **options: Any
) -> Callable[..., Iterator[OrthancServer]]:
    """A function-scoped pytest fixture yielding a started :class:`OrthancServer`.

    ``options`` go to :class:`OrthancServer`.  Assign it in a test module under
    the fixture's name: ``orthanc = orthanc_fixture()``.  The server is stopped
    after the test, whatever its outcome (killed at once unless
    ``graceful_stop``: its storage lives in the test's ``tmp_path`` and is not
    reused); a server that cannot start fails the test (it is not skipped).
    """

    @pytest.fixture
    def _orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
        server = OrthancServer(tmp_path / "orthanc", **options)
        try:
            server.start()
        except OrthancError as exc:
            pytest.fail(str(exc))
        try:
            yield server
        finally:
            server.stop(graceful=graceful_stop)

    return _orthanc
