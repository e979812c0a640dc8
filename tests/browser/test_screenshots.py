"""Screenshots of the page for docs/screenshots/, taken against a fresh server with a job in each state (done,
running with progress, waiting, cancelled). Runs only when `WANSERVE_SCREENSHOT_DIR` names where to write them:

    WANSERVE_SCREENSHOT_DIR=docs/screenshots python -m pytest tests/browser/test_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

OUT = os.environ.get("WANSERVE_SCREENSHOT_DIR")
JOB = {"model": "tiny-t2v", "width": 96, "height": 64, "num_frames": 17, "num_inference_steps": 8}


@pytest.mark.skipif(not OUT, reason="WANSERVE_SCREENSHOT_DIR is not set")
def test_screenshots(new_page, start_server, sse, hold_for):
    server = start_server({"WANSERVE_MODELS": "tiny-t2v,tiny-i2v,tiny-t2v-moe"}, name="screenshots")
    url, out = server.url, Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    done = httpx.post(f"{url}/v1/jobs", json={**JOB, "prompt": "A red fox running through fresh snow"}).json()
    sse(url, done["id"])
    hold = hold_for(server)
    try:
        running = httpx.post(f"{url}/v1/jobs", json={**JOB, "prompt": "Waves breaking on black volcanic sand"}).json()
        sse(url, running["id"], until=lambda e: e["event"] == "step")
        httpx.post(f"{url}/v1/jobs", json={**JOB, "prompt": "A paper boat drifting down a rainy street"})
        dropped = httpx.post(f"{url}/v1/jobs", json={**JOB, "prompt": "Timelapse of clouds over mountains"}).json()
        httpx.post(f"{url}/v1/jobs/{dropped['id']}/cancel")

        for name, width, height in (("desktop-1280x800", 1280, 800), ("phone-390x844", 390, 844)):
            page = new_page(width, height)
            page.goto(url)
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            expect(page.locator(f"#job-{done['id']} .thumb img")).to_have_js_property("complete", True)
            expect(page.locator(f"#job-{running['id']} .job-progress-text")).to_contain_text("ETA")
            page.get_by_label("Prompt", exact=True).fill("A lighthouse at dusk, waves, slow camera push-in")
            page.screenshot(path=out / f"{name}.png")
            if width < 960:
                page.locator("#jobs-heading").scroll_into_view_if_needed()
                page.screenshot(path=out / f"{name}-jobs.png")
            else:
                page.locator(f"#job-{done['id']}").get_by_role(
                    "button", name="Play: A red fox running through fresh snow"
                ).click()
                page.wait_for_function("() => document.querySelector('#viewer video')?.currentTime > 0")
                page.screenshot(path=out / f"{name}-player.png")
                page.keyboard.press("Escape")
                page.get_by_label("Model", exact=True).select_option("tiny-t2v-moe")
                page.get_by_text("Advanced options").click()
                page.locator("#advanced").scroll_into_view_if_needed()
                page.screenshot(path=out / f"{name}-advanced.png")
    finally:
        hold.off()
        for job in httpx.get(f"{url}/v1/jobs").json()["data"]:
            hold.release(job["id"])
