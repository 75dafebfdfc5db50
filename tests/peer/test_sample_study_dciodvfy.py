"""The sample CT series against dicom3tools: dciodvfy per file, dcentvfy per series."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from clara_ray.sample import generate_phantom, write_ct_series, write_sample_study

pytestmark = pytest.mark.peer


def _run(tool: str, paths: list[Path]) -> tuple[int, str]:
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed (Debian package dicom3tools)")
    done = subprocess.run(
        [exe, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout + done.stderr


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def _check(paths: list[Path]) -> None:
    for path in (paths[0], paths[len(paths) // 2], paths[-1]):
        rc, output = _run("dciodvfy", [path])
        assert _errors(output) == [], f"dciodvfy {path.name}:\n{output}"
        assert rc == 0, f"dciodvfy {path.name} exited {rc}:\n{output}"
    rc, output = _run("dcentvfy", paths)
    assert _errors(output) == [], f"dcentvfy:\n{output}"
    assert rc == 0, f"dcentvfy exited {rc}:\n{output}"


def test_sample_study_passes(tmp_path: Path) -> None:
    paths = write_sample_study(tmp_path / "study", slices=6, seed=4)
    assert [p.name for p in paths] == [f"CT{i:06d}.dcm" for i in range(1, 7)]
    _check(paths)


def _oblique_reversed(dest: Path) -> list[Path]:
    c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
    return write_ct_series(
        generate_phantom(slices=4, rows=64, columns=64),
        dest,
        image_orientation=(1.0, 0.0, 0.0, 0.0, c, s),
        origin=(-20.0, 15.5, -300.25),
        reverse_order=True,
    )


def _implicit(dest: Path) -> list[Path]:
    phantom = generate_phantom(slices=4, rows=64, columns=64)
    return write_ct_series(phantom, dest, transfer_syntax=ImplicitVRLittleEndian)


def _rle(dest: Path) -> list[Path]:
    phantom = generate_phantom(slices=4, rows=64, columns=64)
    return write_ct_series(phantom, dest, transfer_syntax=RLELossless, series_number=7)


@pytest.mark.parametrize("write", [_oblique_reversed, _implicit, _rle])
def test_series_variants_pass(tmp_path: Path, write: Callable[[Path], list[Path]]) -> None:
    _check(write(tmp_path / "series"))
