"""Helpers for DICOM peer tests: a StorageScp on a free port, small studies, dcmtk tools.

Every dcmtk tool runs with ``TCP_NODELAY=1`` in its environment (without it
dcmtk 3.6.7 stalls ~45 ms per DIMSE response on loopback).  A missing tool is a
test failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from clara_ray.config.dicom import (
    AeTitleConfig,
    DicomConfig,
    DicomSettings,
    SourceConfig,
    TlsSettings,
)
from clara_ray.dicom.scp import StorageScp
from clara_ray.dicom.spool import Spool
from clara_ray.sample import generate_phantom, write_ct_series

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _dcmtk_command(tool: str, args: tuple[str | Path, ...]) -> list[str]:
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed (Debian package dcmtk)")
    return [exe, *map(str, args)]


def dcmtk(tool: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool to completion; its output is stdout and stderr together."""
    return subprocess.run(
        _dcmtk_command(tool, args),
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def dcmtk_popen(tool: str, *args: str | Path) -> subprocess.Popen[str]:
    """Start a dcmtk tool; its output is stdout and stderr together."""
    return subprocess.Popen(
        _dcmtk_command(tool, args),
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scp_settings(**overrides: Any) -> DicomSettings:
    """Listener settings for tests: loopback, any free port (0), no disk reserve, open sources."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "reject_unknown_sources": False,
        "disk_reserve_mb": 0,
        "acse_timeout": 5.0,
        "network_timeout": 10.0,
    }
    values.update(overrides)
    port = values.pop("port", 0)
    # port 0 (any free port) is for tests only: DicomSettings requires 1-65535
    return DicomSettings(**values).model_copy(update={"port": port})


def clara_config(
    *aetitles: AeTitleConfig | str, sources: tuple[tuple[str, str], ...] = ()
) -> DicomConfig:
    ae = tuple(
        AeTitleConfig(ae_title=a, pipelines=("sample",)) if isinstance(a, str) else a
        for a in (aetitles or ("CLARA",))
    )
    return DicomConfig(
        aetitles=ae, sources=tuple(SourceConfig(ae_title=c, host=h) for c, h in sources)
    )


@dataclass
class RunningScp:
    scp: StorageScp
    port: int
    spool: Spool

    def stored_files(self) -> list[Path]:
        return [f for g in self.spool.open_groups() for f in self.spool.files(g.path)]


@contextmanager
def running_scp(
    root: Path,
    settings: DicomSettings | None = None,
    config: DicomConfig | None = None,
    **kwargs: Any,
) -> Iterator[RunningScp]:
    """A started StorageScp with its own spool under ``root``; always stopped."""
    spool = Spool(root / "spool")
    scp = StorageScp(settings or scp_settings(), config or clara_config(), spool, **kwargs)
    port = scp.start()
    try:
        yield RunningScp(scp, port, spool)
    finally:
        scp.stop()


def write_study(dest: Path, slices: int = 10, size: int = 64, **kwargs: Any) -> list[Path]:
    """A small CT study (fresh UIDs) of ``slices`` files of ``size`` x ``size`` pixels."""
    return write_ct_series(generate_phantom(slices=slices, rows=size, columns=size), dest, **kwargs)


def dataset_part(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: what follows the File Meta Information."""
    raw = path.read_bytes()
    if raw[128:132] != b"DICM":
        raise ValueError(f"{path} is not a DICOM Part 10 file (no DICM prefix)")
    group_length = struct.unpack_from("<L", raw, 132 + 8)[0]
    return raw[132 + 12 + group_length :]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the peer sends until it closes the connection (AssertionError on timeout)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the peer kept the connection open for {timeout} s")


def scu_ae(calling: str = "PYSCU") -> AE:
    """A pynetdicom SCU proposing CT Image Storage in Explicit VR LE, and Verification."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = 5
    ae.dimse_timeout = 10
    ae.network_timeout = 10
    ae.maximum_pdu_size = 131072
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae


def _nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLERS = [(evt.EVT_CONN_OPEN, _nodelay)]


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def tls(self, **overrides: Any) -> TlsSettings:
        values: dict[str, Any] = {
            "enabled": True,
            "certificate": self.server_cert,
            "private_key": self.server_key,
            "ca_certificates": self.ca,
        }
        values.update(overrides)
        return TlsSettings(**values)


def make_certificates(dest: Path) -> Certificates:
    """A test CA and a server (localhost, 127.0.0.1) and a client certificate it signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (Debian package openssl)")
    dest.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        done = subprocess.run(
            [openssl, *args], cwd=dest, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stderr}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=clara-ray test CA")  # fmt: skip
    for name, alt in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        (dest / f"{name}.ext").write_text(f"subjectAltName={alt}\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return Certificates(
        ca=dest / "ca.pem",
        server_cert=dest / "server.pem",
        server_key=dest / "server.key",
        client_cert=dest / "client.pem",
        client_key=dest / "client.key",
    )
