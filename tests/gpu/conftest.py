"""GPU tests: every test here runs on CUDA, and is skipped (with the reason) without a device.

cupy paths need the ``gpu`` extra (``pip install -e '.[gpu]'``), the liver model a
CUDA build of torch (the ``ai`` extra from PyPI on Linux).  Tests that go through Ray
start a Ray with one GPU in a process of their own (:mod:`tests.gpu.ray_checks`), so
they never meet the suite's session Ray, whose GPUs are fake.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # also registered in pyproject.toml; here so that the folder runs alone under
    # --strict-markers before (or without) that
    config.addinivalue_line(
        "markers", "gpu: needs an NVIDIA GPU with CUDA (tests/gpu); skipped without one"
    )
