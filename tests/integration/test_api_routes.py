"""The REST API on Ray Serve over real HTTP, behind a token: every route and its 4xx answers."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_server import Api, api_server
from tests.conftest import make_settings, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "api-test-token-0123456789abcdef"
APP = "clara-api-test"
PIPELINE = """\
api-version: 0.4.0
name: api-one
description: one operator writing one result
operators:
  - name: who
    run: tests.ops:whoami
    input: [{name: payload}]
"""
BROKEN = """\
api-version: 0.4.0
name: broken
flavour: sweet
operators:
  - name: a
    run: tests.ops:whoami
    colour: blue
"""


@pytest.fixture(scope="module")
def api(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = make_settings(
        tmp_path_factory.mktemp("api"),
        CLARA_RAY_SERVE__API_TOKEN=TOKEN,
        CLARA_RAY_SERVE__MAX_UPLOAD_MB="1",
    )
    with api_server(settings, APP) as served:
        yield served


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload(api: Api, files: list[tuple[str, bytes]], status: int = 201, **data: str) -> Any:
    parts = [("files", (name, body, "application/octet-stream")) for name, body in files]
    return api.json("POST", "/api/v1/payloads", status, files=parts, data=data)


@pytest.fixture(scope="module")
def finished_job(api: Api) -> dict[str, Any]:
    """A Healthy job of pipeline api-one, with an extra .dcm and a symlink out in its results."""
    api.json(
        "POST", "/api/v1/pipelines", 201, content=PIPELINE, headers={"Content-Type": "text/yaml"}
    )
    payload = upload(api, [("1.dcm", b"dicom")])
    job = api.json(
        "POST", "/api/v1/jobs", 201, json={"pipeline": "api-one", "payload": payload["payload_id"]}
    )
    job_id = job["job_id"]

    def stopped() -> dict[str, Any] | None:
        described = api.json("GET", f"/api/v1/jobs/{job_id}")
        return described if described["state"] == "Stopped" else None

    described = wait_for(stopped, timeout=120, what="the job to stop")
    assert isinstance(described, dict) and described["status"] == "Healthy", described
    root = Path(api.settings.storage) / "results" / job_id / "who"
    (root / "seg.dcm").write_bytes(b"DICM")
    secret = root.parents[2] / "secret.txt"
    secret.write_text("outside the results")
    (root / "escape").symlink_to(secret)
    return described


# -- authentication --------------------------------------------------------------------------


def test_token_required_except_health(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=60) as anonymous:
        health = anonymous.get("/api/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert anonymous.get("/api/docs").status_code == 200
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            answer = anonymous.get("/api/v1/jobs", headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            assert answer.json() == {"detail": "missing or wrong API token"}
        assert anonymous.post("/api/v1/pipelines", content=PIPELINE).status_code == 401
        assert anonymous.get("/api/v1/jobs", params={"access_token": TOKEN}).status_code == 401
        # the event stream alone may carry the token as a query parameter (EventSource)
        assert anonymous.get("/api/v1/events").status_code == 401
        with anonymous.stream("GET", "/api/v1/events", params={"access_token": TOKEN}) as events:
            assert events.status_code == 200


# -- pipelines -------------------------------------------------------------------------------


def test_pipelines(api: Api) -> None:
    created = api.json(
        "POST",
        "/api/v1/pipelines",
        201,
        content=PIPELINE,
        headers={"Content-Type": "application/x-yaml"},
    )
    assert created["name"] == "api-one" and created["source"] == "<api>"
    assert "api-one" in [p["name"] for p in api.json("GET", "/api/v1/pipelines")]
    assert api.json("GET", "/api/v1/pipelines/api-one")["definition"] == PIPELINE
    problems = api.detail(
        "POST", "/api/v1/pipelines", 400, content=BROKEN, headers={"Content-Type": "text/plain"}
    )
    assert isinstance(problems, list) and len(problems) >= 2, problems
    assert any("colour" in p for p in problems) and any("flavour" in p for p in problems)
    assert "expected one of" in api.detail(
        "POST",
        "/api/v1/pipelines",
        415,
        content=PIPELINE,
        headers={"Content-Type": "application/json"},
    )
    assert "does not exist" in api.detail("GET", "/api/v1/pipelines/nope", 404)
    assert "does not exist" in api.detail("DELETE", "/api/v1/pipelines/nope", 404)
    other = PIPELINE.replace("api-one", "api-two")
    api.json("POST", "/api/v1/pipelines", 201, content=other, headers={"Content-Type": "text/yaml"})
    assert api.json("DELETE", "/api/v1/pipelines/api-two") == {"deleted": "api-two"}
    api.detail("GET", "/api/v1/pipelines/api-two", 404)


# -- payloads --------------------------------------------------------------------------------


def test_multi_file_and_zip_uploads_become_payloads(api: Api) -> None:
    several = upload(api, [("a.dcm", b"a" * 100), ("b.dcm", b"b" * 50)], name="two-files")
    assert (several["files"], several["bytes"], several["name"]) == (2, 150, "two-files")
    assert api.json("GET", f"/api/v1/payloads/{several['payload_id']}") == several
    assert api.json("GET", "/api/v1/payloads/two-files")["payload_id"] == several["payload_id"]
    archive = zipped({"study/s1/1.dcm": b"1", "study/s1/2.dcm": b"22", "study/s2/3.dcm": b"333"})
    from_zip = upload(api, [("study.zip", archive), ("extra.dcm", b"4444")])
    assert (from_zip["files"], from_zip["bytes"]) == (4, 10)
    ids = {p["payload_id"] for p in api.json("GET", "/api/v1/payloads")}
    assert {several["payload_id"], from_zip["payload_id"]} <= ids
    stored = Path(api.settings.storage) / "payloads" / from_zip["payload_id"] / "data"
    assert (stored / "study" / "s2" / "3.dcm").read_bytes() == b"333"
    assert "already exists" in upload(api, [("c.dcm", b"c")], 409, name="two-files")["detail"]


def test_bad_uploads(api: Api) -> None:
    assert (
        "exceeds serve.max_upload_mb (1 MiB)"
        in upload(api, [("big.dcm", b"x" * (1024 * 1024 + 1))], 413)["detail"]
    )
    assert (
        "is not a relative path"
        in upload(api, [("z.zip", zipped({"../x.dcm": b"x"}))], 400)["detail"]
    )
    assert "is not a relative path" in upload(api, [("/etc/x.dcm", b"x")], 400)["detail"]
    assert "holds no file" in api.detail(
        "POST", "/api/v1/payloads", 400, files={"name": (None, "x")}
    )
    api.detail("POST", "/api/v1/payloads", 415, json={"files": []})


def test_delete_payloads(api: Api) -> None:
    api.json(
        "POST", "/api/v1/pipelines", 201, content=PIPELINE, headers={"Content-Type": "text/yaml"}
    )
    payload = upload(api, [("a.dcm", b"a")])
    pid = payload["payload_id"]
    job = api.json(
        "POST", "/api/v1/jobs", 201, json={"pipeline": "api-one", "payload": pid, "start": False}
    )
    assert job["state"] == "Pending" and job["queued"] is False
    assert "unfinished jobs" in api.detail("DELETE", f"/api/v1/payloads/{pid}", 409)
    assert api.json("POST", f"/api/v1/jobs/{job['job_id']}/cancel")["state"] == "Stopped"
    assert api.json("DELETE", f"/api/v1/payloads/{pid}") == {"deleted": pid}
    api.detail("GET", f"/api/v1/payloads/{pid}", 404)
    api.detail("DELETE", f"/api/v1/payloads/{pid}", 404)


# -- jobs ------------------------------------------------------------------------------------


def test_job_creation_errors(api: Api) -> None:
    payload = upload(api, [("a.dcm", b"a")])["payload_id"]
    api.json(
        "POST", "/api/v1/pipelines", 201, content=PIPELINE, headers={"Content-Type": "text/yaml"}
    )
    extra = api.detail(
        "POST", "/api/v1/jobs", 422, json={"pipeline": "api-one", "payload": payload, "colour": 1}
    )
    assert extra[0]["loc"] == ["body", "colour"] and extra[0]["type"] == "extra_forbidden"
    bad = api.detail(
        "POST",
        "/api/v1/jobs",
        422,
        json={"pipeline": "api-one", "payload": payload, "priority": "x"},
    )
    assert bad[0]["loc"] == ["body", "priority"]
    assert "does not exist" in api.detail(
        "POST", "/api/v1/jobs", 404, json={"pipeline": "nope", "payload": payload}
    )
    assert "does not exist" in api.detail(
        "POST", "/api/v1/jobs", 404, json={"pipeline": "api-one", "payload": "nope"}
    )
    for verb in ("GET", "POST"):
        path = "/api/v1/jobs/nope" if verb == "GET" else "/api/v1/jobs/nope/start"
        api.detail(verb, path, 404)
    api.detail("POST", "/api/v1/jobs/nope/cancel", 404)
    api.detail("GET", "/api/v1/jobs/nope/logs", 404)
    wide = PIPELINE.replace("api-one", "api-wide") + "    requests: {gpu: 3}\n"
    api.json("POST", "/api/v1/pipelines", 201, content=wide, headers={"Content-Type": "text/yaml"})
    refused = api.detail(
        "POST", "/api/v1/jobs", 422, json={"pipeline": "api-wide", "payload": payload}
    )
    assert "need gpu: 3 at once, the cluster has gpu: 2" in refused
    assert api.json("GET", "/api/v1/health")["core"]  # and it keeps serving


def test_job_filters(api: Api, finished_job: dict[str, Any]) -> None:
    job_id = finished_job["job_id"]

    def ids(**params: Any) -> list[str]:
        return [j["job_id"] for j in api.json("GET", "/api/v1/jobs", params=params)]

    assert job_id in ids()
    assert job_id in ids(state="Stopped", status="healthy", pipeline="api-one")
    assert job_id not in ids(state="Running")
    assert job_id not in ids(status="Faulted")
    assert job_id not in ids(pipeline="other")
    created = finished_job["created_at"]
    assert job_id in ids(since=str(created - 1))
    assert job_id not in ids(since=str(created + 3600))
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created - 60))
    assert job_id in ids(since=iso)
    for name, value in (("since", "yesterday"), ("state", "Sleeping"), ("status", "Fine")):
        detail = api.detail("GET", "/api/v1/jobs", 400, params={name: value})
        assert f"query parameter '{name}'" in detail, detail


def test_job_description_and_logs(api: Api, finished_job: dict[str, Any]) -> None:
    job_id = finished_job["job_id"]
    assert [op["name"] for op in finished_job["operators"]] == ["who"]
    logs = api.json("GET", f"/api/v1/jobs/{job_id}/logs", params={"operator": "who"})
    assert list(logs) == ["who"]
    assert "has no operator 'nope'" in api.detail(
        "GET", f"/api/v1/jobs/{job_id}/logs", 404, params={"operator": "nope"}
    )
    assert "already stopped" in api.detail("POST", f"/api/v1/jobs/{job_id}/start", 409)


# -- results ---------------------------------------------------------------------------------


def test_results_listing_and_download(api: Api, finished_job: dict[str, Any]) -> None:
    job_id = finished_job["job_id"]
    listing = api.json("GET", f"/api/v1/jobs/{job_id}/results")
    assert {e["path"] for e in listing} == {"who/gpus.json", "who/seg.dcm"}
    assert all(e["size"] > 0 for e in listing)
    got = api.http.get(f"/api/v1/jobs/{job_id}/results/who/gpus.json")
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert "gpu_ids" in got.json()
    dcm = api.http.get(f"/api/v1/jobs/{job_id}/results/who/seg.dcm")
    assert (dcm.status_code, dcm.content) == (200, b"DICM")
    assert dcm.headers["content-type"] == "application/dicom"
    assert dcm.headers["content-disposition"] == "attachment; filename*=utf-8''seg.dcm"
    api.detail("GET", "/api/v1/jobs/nope/results", 404)
    api.detail("GET", "/api/v1/jobs/nope/results/who/gpus.json", 404)
    api.detail("GET", f"/api/v1/jobs/{job_id}/results/who/missing.json", 404)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("who/%2e%2e/%2e%2e/%2e%2e/secret.txt", 400),
        ("%2e%2e/%2e%2e/secret.txt", 400),
        ("who/..%2f..%2f..%2fsecret.txt", 400),
        ("/etc/passwd", 400),
        ("%2fetc%2fpasswd", 400),
        ("who%5c..%5csecret.txt", 400),
        ("who/gpus.json%00.png", 400),
        ("who/escape", 404),
    ],
)
def test_downloads_stay_inside_the_jobs_results(
    api: Api, finished_job: dict[str, Any], raw: str, status: int
) -> None:
    url = f"{api.url}/api/v1/jobs/{finished_job['job_id']}/results/{raw}"
    answer = api.http.get(url)
    assert answer.status_code == status, answer.text
    assert "outside the results" not in answer.text


# -- exports and DICOM configuration ---------------------------------------------------------


def test_exports(api: Api, finished_job: dict[str, Any]) -> None:
    assert api.json("GET", "/api/v1/exports", params={"job": finished_job["job_id"]}) == []
    assert isinstance(api.json("GET", "/api/v1/exports", params={"state": "failed"}), list)
    assert "query parameter 'state'" in api.detail(
        "GET", "/api/v1/exports", 400, params={"state": "x"}
    )
    assert "does not exist" in api.detail("GET", "/api/v1/exports/nope", 404)
    api.detail("POST", "/api/v1/exports/nope/resend", 404)


def test_dicom_configuration(api: Api) -> None:
    destination = {"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    stored = api.json("PUT", "/api/v1/dicom/destinations", json=destination)
    assert stored["name"] == "PACS" and stored["port"] == 4242
    assert [d["name"] for d in api.json("GET", "/api/v1/dicom/destinations")] == ["PACS"]
    assert api.json("GET", "/api/v1/dicom/aetitles") == []
    assert api.json("GET", "/api/v1/dicom/sources") == []
    bad = api.detail("PUT", "/api/v1/dicom/destinations", 400, json={**destination, "port": 0})
    assert "invalid DICOM destination" in bad and "port" in bad
    assert "no DICOM configuration 'printers'" in api.detail("GET", "/api/v1/dicom/printers", 404)
    api.detail("PUT", "/api/v1/dicom/printers", 404, json={})
    assert api.json("DELETE", "/api/v1/dicom/destinations/PACS") == {"deleted": "PACS"}
    api.detail("DELETE", "/api/v1/dicom/destinations/PACS", 404)
