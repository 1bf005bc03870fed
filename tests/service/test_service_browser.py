"""The web page in headless Chromium (Debian's chromium, driven by pip playwright): enter a
key, upload a photo and a video, see the pose preview, watch progress, play the result."""

from __future__ import annotations

import shutil
import time

import pytest
from service_helpers import artifacts_dir

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_until(page, expression: str, timeout: float = 60.0):
    """Poll a JS expression from Python (page.wait_for_function compiles its predicate with
    eval, which the page's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(f"() => ({expression})")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed (apt-get install chromium chromium-driver; "
                    ".ci/run does this)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def test_web_page_uploads_shows_preview_progress_and_plays_result(server, browser, tiny_inputs):
    key = server.new_key("browser")
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "401" not in msg.text else None)
    response = page.goto(server.url + "/")
    assert page.title() == "kinemate"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    wait_until(page, "document.getElementById('health').textContent.includes('ready')")

    # A wrong key is refused with the server's message.
    page.fill("#api-key", "km_wrong_key")
    page.set_input_files("#reference", str(tiny_inputs["reference"]))
    page.set_input_files("#driving", str(tiny_inputs["driving"]))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "not valid" in page.inner_text("#error")

    page.fill("#api-key", key)
    page.click("summary")
    page.fill("#steps", "2")
    page.fill("#size", "64x64")
    page.fill("#seed", "3")
    page.click("#submit")
    page.wait_for_selector("#job-card:not([hidden])")
    # Progress is shown while it runs, then the result plays.
    wait_until(page, "['running','succeeded'].includes(document.getElementById('state')"
                     ".textContent)")
    page.wait_for_selector("#pose-preview:not([hidden])", timeout=60_000)
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    assert page.inner_text("#state") == "succeeded"
    assert page.eval_on_selector("#progress", "el => el.value") == 1
    wait_until(page, "(() => { const v = document.getElementById('result-video');"
                     " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0; })()",
               timeout=30)
    video = page.eval_on_selector(
        "#result-video", "v => ({src: v.currentSrc, w: v.videoWidth, h: v.videoHeight, "
                         "d: v.duration, paused: v.paused})")
    assert video["src"].startswith("blob:") and video["w"] == 64 and video["h"] == 64
    assert video["d"] > 0 and not video["paused"]
    preview = page.eval_on_selector("#pose-preview", "img => [img.naturalWidth, img.complete]")
    assert preview[0] > 0 and preview[1]
    assert "DensePose map of the first frame" in page.inner_text("#pose-caption")
    href = page.get_attribute("#download", "href")
    assert href and href.startswith("blob:")
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename.endswith(".mp4")
    # The job list shows the job with its (user-given) file names, as text.
    page.click("#refresh")
    page.wait_for_selector("#jobs tbody tr")
    assert "succeeded" in page.inner_text("#jobs tbody")
    page.screenshot(path=str(artifacts_dir() / "service_web_page.png"), full_page=True)
    # Deleting the job from the page removes it from the list.
    page.click("#delete")
    page.wait_for_selector("#job-card", state="hidden")
    wait_until(page, "document.querySelectorAll('#jobs tbody tr').length === 0", timeout=10)
    assert errors == []
    page.close()


def test_api_reference_page_renders_offline(server, browser):
    """/reference in Chromium: laid out, readable, and it asks nothing of any other host."""
    page = browser.new_page()
    elsewhere = []
    page.on("request", lambda req: elsewhere.append(req.url)
            if not req.url.startswith(server.url) else None)
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server.url + "/reference")
    assert "API reference" in page.title()
    text = page.inner_text("body")
    assert "/api/v1/jobs/{job_id}/result" in text and "idempotency-key" in text
    assert page.locator("div.op").count() >= 8
    assert not elsewhere and not errors
    page.close()
