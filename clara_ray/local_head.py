"""The Ray head that ``clara-ray up`` starts on this machine, and stopping exactly it.

The head runs as ``ray start --head --block`` in a session of its own
(``setsid``): every process of that Ray (GCS, raylet, dashboard, client
server, workers) descends from it and shares its session id. ``up`` records
the leader's pid and start time in ``<data_dir>/run/ray.json``; ``down`` stops
the processes of that session and their descendants, and nothing else. No
process is chosen by what its command line mentions, so an unrelated program
started with ``--address 127.0.0.1:6380`` is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from clara_ray.config.settings import Settings
from clara_ray.errors import ClaraError
from clara_ray.serving import ingress_env

__all__ = ["head_info", "recorded_head", "start_head", "stop_head"]

_STATE_FILE = "ray.json"
_LOG_FILE = "ray-head.log"
_STARTED = re.compile(r"Ray runtime started")
_START_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _state_file(settings: Settings) -> Path:
    return settings.run_dir / _STATE_FILE


def recorded_head(settings: Settings) -> dict[str, Any] | None:
    """What ``up`` recorded about the local head, reachable or not."""
    path = _state_file(settings)
    if not path.exists():
        return None
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def head_info(settings: Settings) -> dict[str, Any] | None:
    """What ``up`` recorded about the local head, if it is still reachable."""
    info = recorded_head(settings)
    if info is None:
        return None
    host, port = info["address"].rsplit(":", 1)
    return info if _port_open(host, int(port)) else None


def _command(settings: Settings) -> list[str]:
    cfg = settings.ray
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={cfg.gcs_port}",
        f"--dashboard-host={cfg.dashboard_host}",
        f"--dashboard-port={cfg.dashboard_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        "--disable-usage-stats",
        f"--resources={json.dumps({settings.scheduling.head_resource: 1})}",
    ]
    if cfg.num_cpus is not None:
        cmd.append(f"--num-cpus={cfg.num_cpus}")
    if cfg.num_gpus is not None:
        cmd.append(f"--num-gpus={cfg.num_gpus}")
    if cfg.object_store_memory is not None:
        cmd.append(f"--object-store-memory={cfg.object_store_memory}")
    return cmd


def start_head(settings: Settings, auth: str) -> dict[str, Any]:
    """Start the head, wait until it is up, record it; ``auth`` is "token" or "disabled"."""
    cfg = settings.ray
    if _port_open("127.0.0.1", cfg.gcs_port):
        raise ClaraError(
            f"port {cfg.gcs_port} (setting ray.gcs_port) is in use by another process; "
            "choose another port or stop that process"
        )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.run_dir / _LOG_FILE
    # The head's job supervisor runs `ray job submit` entrypoints: put this environment's
    # interpreter first on its PATH, so `python -m clara_ray.run` finds clara-ray.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {
        **os.environ,
        **ingress_env(settings.serve),
        "RAY_AUTH_MODE": auth,
        "PATH": path,
    }
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            _command(settings),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + _START_SECONDS
    while not _STARTED.search(log_path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                _stop_session(proc.pid, psutil.Process(proc.pid).create_time())
            tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
            raise ClaraError(
                f"`ray start --head` failed (exit {proc.poll()}); its log is {log_path}:\n{tail}"
            )
        time.sleep(0.2)
    info = {
        "address": f"127.0.0.1:{cfg.gcs_port}",
        "dashboard_url": f"http://{cfg.dashboard_host}:{cfg.dashboard_port}",
        "auth": auth,
        "pid": proc.pid,
        "pid_started_at": psutil.Process(proc.pid).create_time(),
        "log": str(log_path),
        "started_at": time.time(),
    }
    _state_file(settings).write_text(json.dumps(info, indent=2))
    return info


def stop_head(settings: Settings, grace: float = 10.0) -> int:
    """Stop the head ``up`` recorded and forget it; returns how many processes were stopped."""
    info = recorded_head(settings)
    if info is None:
        return 0
    if "pid" not in info:
        raise ClaraError(
            f"{_state_file(settings)} does not say which processes belong to the platform's Ray; "
            "stop them with `ray stop` and delete that file"
        )
    count = _stop_session(int(info["pid"]), float(info["pid_started_at"]), grace)
    _state_file(settings).unlink(missing_ok=True)
    return count


def _session_members(leader: int, leader_started_at: float) -> set[psutil.Process]:
    """Processes of the head's session (and their descendants) started no earlier than it.

    The start-time check keeps a process whose pid or session id was reused by the
    system after the head ended out of the set.
    """
    members: set[psutil.Process] = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(proc.pid) == leader and proc.create_time() >= leader_started_at - 1:
                members.add(proc)
    for proc in list(members):
        with contextlib.suppress(psutil.Error):
            members.update(proc.children(recursive=True))
    return {p for p in members if p.pid != os.getpid()}


def _stop_session(leader: int, leader_started_at: float, grace: float = 10.0) -> int:
    procs = _session_members(leader, leader_started_at)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _gone, alive = psutil.wait_procs(list(procs), timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)
