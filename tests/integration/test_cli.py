"""The `clara-ray` CLI against a platform it starts itself (a local Ray head on free ports)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_platform import BIN, Cli, cli_env
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The CLI as a new user runs it: an empty home (no Ray token yet) and its own ports."""
    runner = Cli(cli_env(tmp_path_factory))
    try:
        yield runner
    finally:
        runner("down", check=False)


def test_status_before_up_says_not_running(cli):
    proc = cli("status", check=False)
    assert proc.returncode == 3
    assert "not running" in proc.stdout


def test_commands_need_a_running_platform(cli):
    proc = cli("list", "jobs", check=False)
    assert proc.returncode == 3
    assert "start it with `clara-ray up`" in proc.stderr


def test_validate_pipeline_reports_problems(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "api-version: 0.4.0\nname: bad\noperators:\n  - name: a\n    run: nope.module:fn\n"
    )
    proc = cli("validate", "pipeline", str(bad), check=False)
    assert proc.returncode == 1
    assert f"{bad}: operator 'a': key 'run': cannot import 'nope.module:fn'" in proc.stdout
    ok = cli.json("validate", "pipeline", "pipelines/ct-lung-bone.yaml")
    assert ok == {
        "valid": True,
        "name": "ct-lung-bone",
        "operators": ["select", "segment", "label-map", "measure", "seg", "sr", "export"],
    }


def test_up_on_a_fresh_home_creates_the_ray_token_and_registers_reference_pipelines(cli):
    token = Path(cli.env["HOME"]) / ".ray" / "auth_token"
    assert not token.exists()
    status = cli.json("up")
    assert status["running"] is True
    assert any(a["name"] == "clara-core" for a in status["actors"])
    assert status["dashboard_url"].startswith("http://127.0.0.1:")
    assert status["auth_token"] == {"source": str(token), "created": True}
    assert len(token.read_text()) == 64
    assert set(status["pipelines_registered"]) == {
        "ct-lung-bone",
        "ct-liver-ai",
        "deidentify-and-forward",
    }
    listed = json.loads(cli("list", "pipelines", "--json").stdout)
    assert {p["name"] for p in listed} >= {"ct-lung-bone", "deidentify-and-forward"}
    again = cli.json("up")
    assert again["auth_token"]["created"] is False and again["pipelines_registered"] == []


def test_joining_a_cluster_without_a_token_says_what_to_set(cli, tmp_path):
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    env = {
        **cli.env,
        "HOME": str(empty_home),
        "CLARA_RAY_RAY__ADDRESS": f"127.0.0.1:{cli.env['CLARA_RAY_RAY__GCS_PORT']}",
    }
    proc = Cli(env)("list", "jobs", check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert "no Ray authentication token" in line and "RAY_AUTH_TOKEN" in line


def test_full_cycle(cli, tmp_path):
    cli("up")

    study = tmp_path / "study"
    written = cli.json("sample-study", str(study), "--slices", "24")
    assert written["files"] == 24

    pipeline = cli.json("create", "pipeline", "pipelines/ct-lung-bone.yaml")
    assert pipeline["name"] == "ct-lung-bone" and pipeline["version"] == 1
    payload = cli.json("create", "payload", str(study), "--name", "sample-ct")
    assert payload["files"] == 24

    described = cli.json(
        "create",
        "job",
        "-p",
        "ct-lung-bone",
        "-f",
        "sample-ct",
        "--start",
        "--wait",
        "--timeout",
        "240",
        "--meta",
        "accession=A1",
        "--param",
        "destination=none",
    )
    assert (described["state"], described["status"]) == ("Stopped", "Healthy"), described
    job_id = described["job_id"]
    again = json.loads(cli("describe", "job", job_id, "--json").stdout)
    assert again["metadata"] == {"accession": "A1"}
    for op in again["operators"]:
        assert op["status"] == "Healthy" and op["node_id"] and op["duration"] is not None

    jobs = json.loads(cli("list", "jobs", "--state", "Stopped", "--json").stdout)
    assert [j["job_id"] for j in jobs] == [job_id]
    logs = cli.json("logs", job_id, "--operator", "select")
    assert list(logs) == ["select"] and "operator select finished" in logs["select"]

    dest = tmp_path / "dl"
    got = cli.json("download", f"{job_id}:/operators/measure", str(dest))
    assert got["files"] == ["measurements.json"]
    measured = json.loads((dest / "measurements.json").read_text())
    assert {s["name"] for s in measured["segments"]} == {"body", "lungs", "bone"}

    with urllib.request.urlopen(
        f"http://127.0.0.1:{cli.env['CLARA_RAY_SERVE__PORT']}/api/v1/jobs/{job_id}", timeout=30
    ) as resp:
        api_job = json.loads(resp.read())
    assert api_job["status"] == "Healthy" and len(api_job["operators"]) == 7

    missing = cli("describe", "job", "no-such-job", check=False)
    assert missing.returncode == 1 and "job 'no-such-job' does not exist" in missing.stderr


def test_dicom_configuration_and_echo(cli):
    port = cli.env["CLARA_RAY_DICOM__PORT"]
    status = cli.json("status")
    assert status["dicom"]["port"] == int(port) and status["dicom"]["running"] is True
    assert status["dicom"]["ae_title"] == "CLARA"
    assert status["dicom"]["durability"] == "instance"
    receivers = status["dicom"]["receivers"]
    assert receivers and all(r["pid"] > 0 and r["port"] == int(port) for r in receivers)

    unknown = cli(
        "dicom", "create", "aetitle", "CLARA", "--pipeline", "no-such-pipeline", check=False
    )
    assert (
        unknown.returncode == 1 and "pipeline 'no-such-pipeline' does not exist" in unknown.stderr
    )
    bad = cli(
        "dicom",
        "create",
        "aetitle",
        "WAY_TOO_LONG_AE_TITLE",
        "--pipeline",
        "ct-lung-bone",
        check=False,
    )
    assert bad.returncode == 1 and "must be 1 to 16 printable ASCII characters" in bad.stderr

    cli("dicom", "create", "aetitle", "CLARA", "--pipeline", "ct-lung-bone", "--timeout", "10")
    cli("dicom", "create", "source", "MODALITY", "--host", "127.0.0.1")
    cli("dicom", "create", "source", "CLARA", "--host", "127.0.0.1")  # the adapter echoes itself
    cli(
        "dicom",
        "create",
        "destination",
        "SELF",
        "--ae",
        "CLARA",
        "--host",
        "127.0.0.1",
        "--port",
        port,
    )
    assert [a["ae_title"] for a in cli.json("dicom", "list", "aetitles")] == ["CLARA"]
    assert {s["ae_title"] for s in cli.json("dicom", "list", "sources")} == {"CLARA", "MODALITY"}
    assert cli.json("dicom", "list", "destinations")[0]["port"] == int(port)

    deadline = time.monotonic() + 30
    while (echo := cli("dicom", "echo", "SELF", check=False)).returncode != 0:
        # the adapter picks up new AE titles and sources within a few seconds
        assert time.monotonic() < deadline, f"C-ECHO to the adapter itself failed: {echo.stderr}"
        time.sleep(1)
    echoed = cli.json("dicom", "echo", "SELF")
    assert echoed["destination"] == "SELF" and echoed["seconds"] > 0
    missing = cli("dicom", "echo", "NOWHERE", check=False)
    assert missing.returncode == 1 and "no DICOM destination 'NOWHERE'" in missing.stderr

    cli("dicom", "delete", "source", "MODALITY", "--host", "127.0.0.1")
    assert [s["ae_title"] for s in cli.json("dicom", "list", "sources")] == ["CLARA"]
    assert cli.json("list", "exports") == []
    unknown_export = cli("dicom", "resend", "no-such-export", "--json", check=False)
    assert unknown_export.returncode == 1
    assert "export 'no-such-export' does not exist" in unknown_export.stderr
    request = urllib.request.Request(
        f"http://127.0.0.1:{cli.env['CLARA_RAY_SERVE__PORT']}/api/v1/exports/no-such-export/resend",
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 404
    assert "does not exist" in json.loads(answer.value.read())["detail"]


def _ray_job_submit(cli, working_dir: Path, *entrypoint: str) -> subprocess.CompletedProcess:
    """``ray job submit`` to the test's cluster; fails the test unless it exits 0."""
    dashboard = f"http://127.0.0.1:{cli.env['CLARA_RAY_RAY__DASHBOARD_PORT']}"
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard,
         "--working-dir", str(working_dir), "--", *entrypoint],
        env={**cli.env, "RAY_AUTH_MODE": "token"},
        cwd=working_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ray_job_submit_runs_one_job(cli, tmp_path):
    study = tmp_path / "study"
    cli("sample-study", str(study), "--slices", "16")
    proc = _ray_job_submit(
        cli, ROOT, "python", "-m", "clara_ray.run", "pipelines/ct-lung-bone.yaml", str(study),
        "--json", "--param", "destination=none",
    )  # fmt: skip
    assert '"status": "Healthy"' in proc.stdout


SUBMITTED_OPERATOR = """
def mark(ctx, payload):
    ctx.results.write_json("marker.json", {"files": len(list(payload.iter_files()))})
    return {}
"""

SUBMITTED_PIPELINE = """
api-version: 0.4.0
name: submitted-code
operators:
  - name: mark
    run: submitted_only_ops:mark
    input: [{name: payload}]
"""


def test_ray_job_submit_runs_operators_from_the_submitted_working_dir(cli, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "submitted_only_ops.py").write_text(SUBMITTED_OPERATOR)
    (code / "pipeline.yaml").write_text(SUBMITTED_PIPELINE)
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "a.txt").write_text("a")
    (payload / "b.txt").write_text("b")
    proc = _ray_job_submit(
        cli, code, "python", "-m", "clara_ray.run", "pipeline.yaml", str(payload), "--json",
        "--download", str(tmp_path / "out"),
    )  # fmt: skip
    assert '"status": "Healthy"' in proc.stdout
    (marker,) = (tmp_path / "out").rglob("marker.json")
    assert json.loads(marker.read_text()) == {"files": 2}


def test_down_stops_its_own_ray_only_and_keeps_the_token(cli):
    port = cli.env["CLARA_RAY_RAY__GCS_PORT"]
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "--address", f"127.0.0.1:{port}"]
    )
    try:
        stopped = cli.json("down")
        assert stopped["stopped"] == ["ray"] and stopped["processes"] > 3
        assert bystander.poll() is None, "down stopped a process that only mentions the port"
    finally:
        bystander.kill()
        bystander.wait()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"--gcs-address=127.0.0.1:{port}" not in ps and f"gcs_server_port={port}" not in ps
    assert f"--port={port}" not in ps
    assert cli("status", check=False).returncode == 3
    assert (Path(cli.env["HOME"]) / ".ray" / "auth_token").is_file()
