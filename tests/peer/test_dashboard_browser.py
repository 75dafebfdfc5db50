"""The dashboard in a real browser (Chromium driven by Playwright) against a platform that
`clara-ray up` started, with an API token: a job goes Pending -> Running -> Stopped/Healthy
in the jobs table without a reload, and the viewer scrolls, windows, projects, renders in
3D and toggles an overlay. Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from clara_ray.sample import generate_phantom, write_ct_series
from tests.cli_platform import Cli, cli_env
from tests.conftest import ROOT

pytestmark = [pytest.mark.peer, pytest.mark.ray, pytest.mark.slow]

TOKEN = "dashboard-test-token"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(cli_env(tmp_path_factory, CLARA_RAY_SERVE__API_TOKEN=TOKEN))
    cli("up", timeout=400)
    try:
        yield cli
    finally:
        cli("down", check=False)


@pytest.fixture
def page() -> Iterator[tuple[Page, list[str]]]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make peers` installs Debian's chromium")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(f"console: {message.text}")

        tab.on("console", console)
        tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        try:
            yield tab, errors
        finally:
            browser.close()


def shot(tab: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def state_of(tab: Page, job_id: str) -> str:
    cell = tab.locator(f'tr[data-job="{job_id}"] td.state')
    return cell.inner_text() if cell.count() else ""


def view_params(tab: Page) -> tuple[str, dict[str, str]]:
    """The path and query of the view the viewer shows once no request is pending."""
    tab.wait_for_selector("img#view[data-view]:not([data-pending])", timeout=60_000)
    url = urlsplit(tab.get_attribute("img#view", "data-view") or "")
    return url.path, {k: v[0] for k, v in parse_qs(url.query).items()}


def wait_for_view(tab: Page, check: object, what: str) -> tuple[str, dict[str, str]]:
    for _ in range(300):
        path, params = view_params(tab)
        if check(path, params):  # type: ignore[operator]
            return path, params
        tab.wait_for_timeout(100)
    raise AssertionError(f"the viewer never showed {what}; last view {path}?{params}")


def test_jobs_live_and_the_viewer(
    platform: Cli, page: tuple[Page, list[str]], tmp_path: Path
) -> None:
    tab, errors = page
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    base = f"http://127.0.0.1:{platform.env['CLARA_RAY_SERVE__PORT']}"
    tab.goto(base + "/")
    tab.wait_for_selector("#token-dialog[open]")
    tab.fill("#token-input", TOKEN)
    tab.click("#token-form button[type=submit]")
    tab.wait_for_selector("#live.on", timeout=30_000)
    tab.evaluate("window.__notReloaded = true")

    study = tmp_path / "study"
    write_ct_series(
        generate_phantom(slices=24, rows=96, columns=96, spacing=(2.5, 2.0, 2.0)), study
    )
    job = platform.json(
        "create", "job", "-p", "ct-lung-bone", "-f", str(study), "--param", "destination=none"
    )
    job_id = job["job_id"]  # type: ignore[index]
    tab.wait_for_function(
        f'document.querySelector(\'tr[data-job="{job_id}"] td.state\')?.innerText === "Pending"',
        timeout=30_000,
    )
    shot(tab, "1-pending")
    platform("start", "job", job_id)
    seen = ["Pending"]
    for _ in range(1800):
        state = state_of(tab, job_id)
        if state and state != seen[-1]:
            seen.append(state)
        if state in ("Healthy", "Faulted", "Canceled", "Timeout"):
            break
        tab.wait_for_timeout(100)
    assert seen == ["Pending", "Running", "Healthy"], seen
    assert tab.evaluate("window.__notReloaded") is True
    shot(tab, "2-healthy")

    tab.click(f'tr[data-job="{job_id}"]')
    tab.wait_for_selector("text=Operators")
    assert tab.locator("tr[data-operator]").count() == 7
    shot(tab, "3-job")
    tab.click("text=Open viewer")
    path, params = view_params(tab)
    assert path.endswith("/series-1/slice.png") and params["axis"] == "axial"
    first = int(params["index"])
    shot(tab, "4-slice")

    tab.hover("img#view")
    tab.mouse.wheel(0, 120)
    wait_for_view(tab, lambda p, q: int(q.get("index", -1)) == first + 1, "the next slice")

    box = tab.locator("img#view").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    tab.mouse.move(x, y)
    tab.mouse.down()
    tab.mouse.move(x + 60, y - 30, steps=4)
    tab.mouse.up()
    _, params = wait_for_view(tab, lambda p, q: "window" in q, "an explicit window/level")
    assert int(params["window"]) > 400 and "preset" not in params
    shot(tab, "5-window-level")

    tab.select_option("#preset", "lung")
    wait_for_view(tab, lambda p, q: q.get("preset") == "lung", "the lung preset")

    overlay = tab.locator("input[data-segment]").first
    segment = overlay.get_attribute("data-segment")
    before = set(view_params(tab)[1].get("segments", "").split(","))
    assert segment in before
    overlay.uncheck()
    wait_for_view(
        tab, lambda p, q: segment not in q.get("segments", "").split(","), "the overlay toggled"
    )
    tab.select_option("#overlay", "seg.seg")  # the DICOM SEG instead of the NRRD label map
    wait_for_view(tab, lambda p, q: q.get("overlay") == "seg.seg", "the SEG overlay")
    shot(tab, "6-overlay")

    tab.click("#axis-coronal")
    wait_for_view(tab, lambda p, q: q.get("axis") == "coronal", "the coronal axis")
    tab.click("#mode-mip")
    wait_for_view(tab, lambda p, q: p.endswith("/mip.png"), "a MIP")
    shot(tab, "7-mip")

    tab.click("#mode-3d")
    _, params = wait_for_view(tab, lambda p, q: p.endswith("/3d.png"), "a 3D view")
    azimuth = int(params["azimuth"])
    box = tab.locator("img#view").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    tab.mouse.move(x, y)
    tab.mouse.down()
    tab.mouse.move(x + 80, y, steps=4)
    tab.mouse.up()
    wait_for_view(tab, lambda p, q: int(q["azimuth"]) != azimuth, "an orbit")
    shot(tab, "8-3d")

    rendered = tab.evaluate("document.querySelector('img#view').naturalWidth")
    assert rendered == 512
    assert re.fullmatch(r"#/viewer/[0-9a-f]+", tab.evaluate("location.hash"))
    assert errors == []
