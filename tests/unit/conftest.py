"""Fixtures of the unit tests: a Core without Ray (see :mod:`tests.unit.core_env`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clara_ray.core import CoreService
from tests.unit.core_env import DIAMOND, Env


@pytest.fixture
def env(tmp_path: Path, payload_dir: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    e.storage.upload_payload("pay-1", payload_dir)
    e.core.payloads.register_payload("pay-1", name="study-1", source="test")
    e.core.pipelines.create_pipeline(DIAMOND, source="diamond.yaml")
    yield e
    e.close()


@pytest.fixture
def core(env: Env) -> CoreService:
    return env.core
