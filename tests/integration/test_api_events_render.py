"""The event stream and the render routes over real HTTP, with a real job of ct-lung-bone."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from clara_ray.sample import generate_phantom, write_ct_series
from tests.api_server import Api, api_server
from tests.conftest import ROOT, make_settings, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "events-render-token-0123456789"


@pytest.fixture(scope="module")
def api(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = make_settings(
        tmp_path_factory.mktemp("events-render"), CLARA_RAY_SERVE__API_TOKEN=TOKEN
    )
    with api_server(settings, "clara-api-events", render=True) as served:
        definition = (ROOT / "pipelines" / "ct-lung-bone.yaml").read_text()
        served.json(
            "POST", "/api/v1/pipelines", 201, content=definition,
            headers={"Content-Type": "text/yaml"},
        )  # fmt: skip
        yield served


@pytest.fixture(scope="module")
def payload(api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    study = tmp_path_factory.mktemp("study")
    write_ct_series(generate_phantom(slices=12, rows=64, columns=64), study)
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in study.iterdir()]
    return str(api.json("POST", "/api/v1/payloads", 201, files=files)["payload_id"])


def create_job(api: Api, payload: str, *, start: bool) -> str:
    body = {
        "pipeline": "ct-lung-bone",
        "payload": payload,
        "parameters": {"destination": "none"},
        "start": start,
    }
    return str(api.json("POST", "/api/v1/jobs", 201, json=body)["job_id"])


def healthy(api: Api, job_id: str) -> dict[str, Any]:
    def stopped() -> dict[str, Any] | None:
        job = api.json("GET", f"/api/v1/jobs/{job_id}")
        return job if job["state"] == "Stopped" else None

    job = wait_for(stopped, timeout=180, what=f"job {job_id} to stop")
    assert isinstance(job, dict) and job["status"] == "Healthy", job
    return job


class Listener:
    """Reads the event stream on a thread until told to stop after an event."""

    def __init__(self, api: Api, headers: dict[str, str], params: dict[str, str]) -> None:
        self.messages: list[dict[str, str]] = []
        self.response_headers: httpx.Headers | None = None
        self.stop_when: Any = lambda message: False
        self._api, self._headers, self._params = api, headers, params
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        with (
            httpx.Client(base_url=self._api.url, timeout=60) as client,
            client.stream(
                "GET", "/api/v1/events", headers=self._headers, params=self._params
            ) as answer,
        ):
            self.response_headers = answer.headers
            for line in answer.iter_lines():
                if line == "" and fields:
                    self.messages.append(fields)
                    if self.stop_when(fields):
                        return
                    fields = {}
                elif ": " in line and not line.startswith(":"):
                    key, value = line.split(": ", 1)
                    fields[key] = value

    def join(self) -> None:
        self._thread.join(timeout=240)
        assert not self._thread.is_alive(), "the stream never sent the awaited event"


def job_event(job_id: str, state: str) -> Any:
    def matches(message: dict[str, str]) -> bool:
        if message.get("event") != "job":
            return False
        data = json.loads(message["data"])
        return bool(data["job_id"] == job_id and data["state"] == state)

    return matches


def test_a_reconnect_with_last_event_id_gets_every_event_it_missed(api: Api, payload: str) -> None:
    first = Listener(api, {"Authorization": f"Bearer {TOKEN}"}, {})
    wait_for(lambda: first.messages, timeout=30, what="the ready message")
    assert first.messages[0]["event"] == "ready"
    headers = first.response_headers
    assert headers is not None
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-accel-buffering"] == "no" and headers["cache-control"] == "no-cache"
    job_id = create_job(api, payload, start=False)
    first.stop_when = job_event(job_id, "Pending")
    first.join()  # the client goes away after the job's first event
    last_seen = int(first.messages[-1]["id"])
    api.json("POST", f"/api/v1/jobs/{job_id}/start")
    healthy(api, job_id)  # everything after last_seen happened while nobody listened

    again = Listener(api, {"Last-Event-ID": str(last_seen)}, {"access_token": TOKEN})
    again.stop_when = job_event(job_id, "Stopped")
    again.join()
    replayed = [m for m in again.messages if m["event"] != "ready"]
    ids = [int(m["id"]) for m in replayed]
    assert ids == list(range(last_seen + 1, last_seen + 1 + len(ids)))  # no gap, no repeat
    kinds = {(m["event"], json.loads(m["data"])["state"]) for m in replayed}
    assert {("job", "Running"), ("operator", "Running"), ("job", "Stopped")} <= kinds


def test_the_event_stream_needs_the_token_and_checks_its_start(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        assert anonymous.get("/api/v1/events").status_code == 401
        assert anonymous.get("/api/v1/jobs", params={"access_token": TOKEN}).status_code == 401
    detail = api.detail("GET", "/api/v1/events", 400, headers={"Last-Event-ID": "soon"})
    assert detail == "Last-Event-ID must be a non-negative event id, got 'soon'"


@pytest.fixture(scope="module")
def rendered_job(api: Api, payload: str) -> str:
    job_id = create_job(api, payload, start=True)
    healthy(api, job_id)
    return job_id


def png(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(answer.content)))


def test_a_job_s_volumes_and_their_views(api: Api, rendered_job: str) -> None:
    volumes = {v["volume"]: v for v in api.json("GET", f"/api/v1/render/{rendered_job}/volumes")}
    assert list(volumes) == ["series-1", "label-map.labels", "seg.seg"]
    image = volumes["series-1"]
    assert (image["kind"], image["lengths"]["axial"]) == ("image", 12)
    assert image["overlays"] == ["label-map.labels", "seg.seg"]
    for overlay in ("label-map.labels", "seg.seg"):
        assert volumes[overlay]["kind"] == "labels"
        assert [s["name"] for s in volumes[overlay]["segments"]] == ["body", "lungs", "bone"]
    base = f"/api/v1/render/{rendered_job}/series-1"
    assert png(api.http.get(f"{base}/slice.png", params={"index": 5})).shape == (64, 64)
    for labels in ("label-map.labels", "seg.seg"):
        overlay = {"overlay": labels, "segments": "2", "opacity": "1"}
        assert png(api.http.get(f"{base}/mip.png", params=overlay)).shape == (64, 64, 3)
    assert png(api.http.get(f"{base}/3d.png", params={"size": 96})).shape == (96, 96, 3)


def test_bad_render_requests_name_what_was_wrong(api: Api, rendered_job: str) -> None:
    base = f"/api/v1/render/{rendered_job}/series-1"
    detail = api.detail("GET", f"{base}/slice.png", 400, params={"index": 99})
    assert detail == "index must be in 0..11 for axis 'axial', got 99"
    detail = api.detail("GET", f"{base}/3d.png", 400, params={"size": 2048})
    assert detail.startswith("size: Input should be less than or equal to 1024")
    assert "not a view" in api.detail("GET", f"{base}/cube.png", 400)
    detail = api.detail("GET", f"/api/v1/render/{rendered_job}/ct/slice.png", 404)
    assert (
        detail
        == f"job {rendered_job} has no volume 'ct' (volumes: series-1, label-map.labels, seg.seg)"
    )
    assert "does not exist" in api.detail("GET", "/api/v1/render/nope/volumes", 404)


def test_a_saved_view_comes_back_with_the_volume(api: Api, rendered_job: str) -> None:
    path = f"/api/v1/render/{rendered_job}/series-1/settings"
    saved = api.json("PUT", path, json={"mode": "mip", "axis": "coronal", "slab": 20})
    assert (saved["mode"], saved["axis"], saved["slab"]) == ("mip", "coronal", 20.0)
    image = api.json("GET", f"/api/v1/render/{rendered_job}/volumes")[0]
    assert image["volume"] == "series-1" and image["settings"] == saved
    detail = api.detail("PUT", path, 400, json={"mode": "hologram"})
    assert detail.startswith("mode: Input should be 'slice', 'mip', 'minip' or '3d'")


def test_the_dashboard_is_served_from_the_package(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and "<title>clara-ray</title>" in page.text
        script = anonymous.get("/static/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith(
            "text/javascript"
        )
        assert anonymous.get("/static/%2e%2e%2fauth.py").status_code == 404
        assert anonymous.get("/static/.hidden.js").status_code == 404
        assert anonymous.get("/static/nothing.js").status_code == 404
        health = anonymous.get("/api/v1/health").json()
    assert health["token_required"] is True
    assert Path(ROOT / "serve" / "dashboard" / "index.html").is_file()
