"""Reports of a job runner whose Core is unreachable: kept, delivered later, never lost."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import ray

from clara_ray.client import PlatformClient
from clara_ray.context import OperatorContext
from clara_ray.contracts.placement import CORE_ACTOR_NAME
from clara_ray.export.manifest import MANIFEST_NAME, ExportManifest
from clara_ray.platform import get_or_create_core
from clara_ray.runner.job_runner import RUNNER_HOST_NAME
from clara_ray.storage import PayloadView
from tests.conftest import make_settings, wait_for

pytestmark = pytest.mark.ray


def export_after(ctx: OperatorContext, payload: PayloadView, seconds: float) -> dict[str, Any]:
    """Sleeps, then leaves a result and the export manifest that sends it to PACS."""
    time.sleep(seconds)
    ctx.results.write_bytes("seg.dcm", b"\0" * 128 + b"DICM")
    manifest = ExportManifest(destinations=("PACS",), files=(f"{ctx.operator}/seg.dcm",))
    ctx.results.write_text(MANIFEST_NAME, manifest.to_json())
    return {}


@pytest.fixture
def settings(tmp_path: Path):
    """Runners give up on a report after 1 s (instead of 120 s) and keep it."""
    return make_settings(tmp_path, CLARA_RAY_CORE__REPORT_RETRY_SECONDS="1")


PIPELINE = """
api-version: 0.4.0
name: export-late
operators:
  - name: only
    run: tests.integration.test_runner_reports:export_after
    args: {seconds: 3}
    input: [{name: payload}]
"""


def test_job_ending_while_its_core_is_unreachable_ends_healthy_with_its_exports(
    platform, payload_dir, tmp_path
):
    settings = platform.settings
    platform.core.dicom_put(
        "destination",
        {"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
    )
    path = tmp_path / "export-late.yaml"
    path.write_text(dedent(PIPELINE))
    job = platform.create_job(str(path), str(payload_dir), start=True)
    wait_for(
        lambda: platform.core.describe_job(job.job_id)["operators"][0]["state"] == "Running",
        what="the operator to run",
    )
    ray.kill(
        ray.get_actor(CORE_ACTOR_NAME, namespace=platform.settings.ray.namespace), no_restart=True
    )  # gone for longer than the runner retries
    host = ray.get_actor(RUNNER_HOST_NAME, namespace=settings.ray.namespace)
    wait_for(
        lambda: ray.get(host.pending_reports.remote()) == [job.job_id],
        what="the runner to keep its final report",
    )
    assert ray.get(host.jobs.remote()) == [job.job_id]  # its run has ended; the host answers for it
    back = PlatformClient.of_actor(
        settings, get_or_create_core(settings)
    )  # recovers, then takes the report
    described = back.wait_job(job.job_id, timeout=60)
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    assert described["operators"][0]["status"] == "Healthy"
    exports = back.core.list_exports(job.job_id)
    assert [(e.destination, str(e.state), e.files) for e in exports] == [
        ("PACS", "Pending", ["only/seg.dcm"])
    ]
    wait_for(lambda: ray.get(host.pending_reports.remote()) == [], what="the outbox to empty")
