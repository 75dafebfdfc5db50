"""dicom3tools as a test peer: dciodvfy (one object against its IOD), dcentvfy (a set agrees)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def run_tool(tool: str, paths: list[Path]) -> tuple[int, str]:
    """Exit status and output; a missing tool fails the test (CI installs dicom3tools)."""
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed (Debian package dicom3tools)")
    done = subprocess.run(
        [exe, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout + done.stderr


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def assert_valid(path: Path) -> None:
    """``dciodvfy`` finds no error in ``path``."""
    rc, output = run_tool("dciodvfy", [path])
    assert errors(output) == [], f"dciodvfy {path.name}:\n{output}"
    assert rc == 0, f"dciodvfy {path.name} exited {rc}:\n{output}"


def assert_consistent(paths: list[Path]) -> None:
    """``dcentvfy`` finds no error across ``paths`` (same patient, study, frame of reference)."""
    rc, output = run_tool("dcentvfy", paths)
    assert errors(output) == [], f"dcentvfy:\n{output}"
    assert rc == 0, f"dcentvfy exited {rc}:\n{output}"
