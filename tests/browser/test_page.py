"""The web page at `/` against a real server: submit, live progress, play, cancel, errors, history, upload."""

from __future__ import annotations

import io
import re
import uuid

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

# Records every text the job cards' progress line shows and every value their progress bars take, in order, so a
# test can check that progress moved through the steps (Playwright's expectations only see the present).
RECORD_PROGRESS = """() => {
  window.progressLog = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "childList" && r.target.classList.contains("job-progress-text")) {
        for (const node of r.addedNodes) window.progressLog.push(node.textContent);
      }
    }
  }).observe(document.getElementById("jobs"), { childList: true, subtree: true });
}"""


def open_page(page, server) -> None:
    """Loads the page and waits until it has the models and the job list (a blank page fails here)."""
    page.goto(server.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    expect(page.get_by_label("Model", exact=True).locator("option")).not_to_have_count(0)


def submit(page, prompt: str, **fields: str) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Generate").click()


def card(page, prompt: str):
    return page.locator("li.job", has=page.locator(".job-title", has_text=prompt))


def job_id_of(card_locator) -> str:
    return card_locator.get_attribute("id").removeprefix("job-")


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def test_submit_progress_moves_then_play_video(page, web_server):
    open_page(page, web_server)
    expect(page.locator("#random-banner")).to_contain_text("Random weights")
    page.evaluate(RECORD_PROGRESS)
    prompt = unique("a red fox in snow")
    submit(page, prompt, Steps="4")

    job = card(page, prompt)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".badge")).to_have_text("Done")
    expect(job.locator(".tag")).to_have_text("random weights")
    expect(job.locator(".thumb img")).to_have_js_property("complete", True)
    log = page.evaluate("window.progressLog")
    steps = [int(m.group(1)) for text in log if (m := re.search(r"step (\d)/4", text))]
    assert steps == sorted(steps) and {1, 2, 3, 4} <= set(steps), log  # every step was shown, in order

    job.get_by_role("button", name=re.compile("^Play")).click()
    viewer = page.get_by_role("dialog")
    expect(viewer).to_be_visible()
    video = viewer.locator("video")
    # The MP4 decodes and plays in the browser: frames of the requested size, time advancing.
    page.wait_for_function(
        "() => { const v = document.querySelector('#viewer video');"
        " return v && v.readyState >= 2 && v.currentTime > 0 && !v.paused; }"
    )
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [64, 64]
    expect(viewer.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"/content$"))
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()


def test_queue_position_and_cancel_running_and_queued(page, web_server, hold_for):
    hold = hold_for(web_server)
    open_page(page, web_server)
    first, second = unique("held job"), unique("waiting job")
    submit(page, first, Steps="4")
    running = card(page, first)
    expect(running.locator(".job-progress-text")).to_contain_text("step 1/4")
    expect(running.locator("progress")).not_to_have_attribute("value", "0")
    submit(page, second)
    waiting = card(page, second)
    expect(waiting.locator(".job-progress-text")).to_contain_text("position 1 in the queue")

    waiting.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(waiting).to_have_attribute("data-status", "cancelled")
    running.get_by_role("button", name=re.compile("^Cancel")).click()
    hold.release(job_id_of(running))  # the worker reaches its stop check after step 1
    expect(running).to_have_attribute("data-status", "cancelled")
    expect(running.locator(".job-error")).to_contain_text("cancelled")
    expect(running.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)


def test_invalid_field_shows_error_banner_and_marks_the_field(page, web_server, page_errors):
    open_page(page, web_server)
    before = httpx.get(f"{web_server.url}/v1/jobs").json()["count"]
    page_errors.expect("422")  # the browser logs the refused request itself
    submit(page, unique("bad frames"), Frames="8")
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("`num_frames` must be 4k+1")
    expect(banner).to_contain_text("got 8")
    frames = page.get_by_label("Frames", exact=True)
    expect(frames).to_have_attribute("aria-invalid", "true")
    expect(frames).to_be_focused()
    assert httpx.get(f"{web_server.url}/v1/jobs").json()["count"] == before  # nothing was queued

    frames.fill("9")  # editing the field clears its error
    expect(frames).not_to_have_attribute("aria-invalid", "true")


def test_history_after_reload_run_again_and_delete(page, web_server):
    open_page(page, web_server)
    prompt = unique("history")
    submit(page, prompt, Seed="1234")
    expect(card(page, prompt)).to_have_attribute("data-status", "succeeded")

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    job = card(page, prompt)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".job-meta")).to_contain_text("seed 1234")

    page.get_by_label("Prompt", exact=True).fill("")
    job.get_by_role("button", name=re.compile("^Run again")).click()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(prompt)
    expect(page.get_by_label("Seed", exact=True)).to_have_value("1234")
    expect(page.locator("#info-banner")).to_contain_text("Settings copied")

    job_id = job_id_of(job)
    page.once("dialog", lambda dialog: dialog.accept())
    job.get_by_role("button", name=re.compile("^Delete")).click()
    expect(job).to_have_count(0)
    assert httpx.get(f"{web_server.url}/v1/jobs/{job_id}").status_code == 404


def test_image_to_video_upload_preview_and_submit(page, web_server, tmp_path):
    open_page(page, web_server)
    page.get_by_label("Model", exact=True).select_option("tiny-i2v")
    upload = page.get_by_label("First frame (image)", exact=True)
    image = tmp_path / "first.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    upload.set_input_files(str(image))
    expect(page.get_by_role("img", name="Preview of first.png")).to_be_visible()

    prompt = unique("from an image")
    submit(page, prompt)
    job = card(page, prompt)
    expect(job).to_have_attribute("data-status", "succeeded")
    params = httpx.get(f"{web_server.url}/v1/jobs/{job_id_of(job)}").json()["params"]
    assert params["task"] == "i2v" and params["image"] is not None

    # Uploaded files are not kept for re-use: "Run again" says which to attach again.
    job.get_by_role("button", name=re.compile("^Run again")).click()
    expect(page.locator("#info-banner")).to_contain_text("Attach the first frame (image) again")
    expect(page.get_by_label("Model", exact=True)).to_have_value("tiny-i2v")


def test_keyboard_submit_and_labelled_controls(page, web_server):
    open_page(page, web_server)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to jobs")).to_be_focused()
    for name in (
        "Model",
        "Task",
        "Prompt",
        "Negative prompt",
        "Size",
        "Steps",
        "Guidance",
        "Seed",
        "Frames",
        "Seconds",
    ):
        expect(page.get_by_label(name, exact=True)).to_be_visible()
    prompt = unique("by keyboard")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Steps", exact=True).press("Enter")  # implicit submission from a field
    expect(card(page, prompt)).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#announcer")).to_contain_text(prompt)


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_layout_fits_without_horizontal_scroll(new_page, web_server, width, height):
    page = new_page(width, height)
    open_page(page, web_server)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    expect(page.get_by_role("button", name="Generate")).to_be_visible()
    expect(page.get_by_role("heading", name="Queue and history")).to_be_attached()


def test_api_key_asked_for_then_jobs_and_media_work_with_it(new_page, start_server, page_errors):
    server = start_server({"WANSERVE_API_KEY": "page-secret"}, name="web-key")
    page = new_page()
    for _ in range(2):
        page_errors.expect("401")  # the models and the health request, refused before the key is given
    page.goto(server.url)
    expect(page.get_by_role("alert")).to_contain_text("This server needs an API key")
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_focused()
    key.fill("page-secret")
    key.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_role("alert")).to_be_hidden()

    prompt = unique("with a key")
    submit(page, prompt)
    job = card(page, prompt)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".thumb img")).to_have_attribute("src", re.compile("^blob:"))  # fetched with the key
    job.get_by_role("button", name=re.compile("^Play")).click()
    page.wait_for_function("() => document.querySelector('#viewer video')?.currentTime > 0")


def test_text_to_image_shows_the_picture(page, web_server):
    open_page(page, web_server)
    page.get_by_label("Task", exact=True).select_option("t2i")
    expect(page.locator("#length-field")).to_be_hidden()  # one frame: nothing to choose
    prompt = unique("a still life")
    submit(page, prompt)
    job = card(page, prompt)
    expect(job).to_have_attribute("data-status", "succeeded")
    job.get_by_role("button", name=re.compile("^View")).click()
    picture = page.get_by_role("dialog").get_by_role("img")
    expect(picture).to_have_js_property("naturalWidth", 64)  # the PNG decoded in the browser
