"""A platform started by the `clara-ray` CLI as a new user starts it: an empty home (no Ray
token yet), a data dir and ports of its own, a local Ray head of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

__all__ = ["BIN", "Cli", "cli_env"]

BIN = Path(sys.executable).parent


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN / "clara-ray"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"clara-ray {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
            )
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self("--json", *args).stdout)


def cli_env(factory: pytest.TempPathFactory, **settings: str) -> dict[str, str]:
    """The environment of such a platform; ``settings`` adds CLARA_RAY_* overrides."""
    env = {
        **os.environ,
        "HOME": str(factory.mktemp("cli-home")),
        "CLARA_RAY_DATA_DIR": str(factory.mktemp("cli-data")),
        "CLARA_RAY_RAY__GCS_PORT": str(free_port()),
        "CLARA_RAY_RAY__DASHBOARD_PORT": str(free_port()),
        "CLARA_RAY_RAY__NUM_CPUS": "2",
        "CLARA_RAY_SERVE__PORT": str(free_port()),
        "CLARA_RAY_DICOM__PORT": str(free_port()),
        "CLARA_RAY_DICOM__RECEIVERS": "1",
        "CLARA_RAY_DICOM__DISK_RESERVE_MB": "0",
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "CLARA_RAY_CONFIG"):
        env.pop(name, None)
    return env
