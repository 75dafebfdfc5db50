"""The sample CT series against dicom3tools: dciodvfy per file, dcentvfy per series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from clara_ray.sample import generate_phantom, write_ct_series, write_sample_study
from tests.peer.dicom3tools import assert_consistent, assert_valid

pytestmark = pytest.mark.peer


def _check(paths: list[Path]) -> None:
    for path in (paths[0], paths[len(paths) // 2], paths[-1]):
        assert_valid(path)
    assert_consistent(paths)


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
