"""The Wan2.1 multi-device service's routes (`/submit`, `/status/{id}`, `/cancel/{id}`) on a real server."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration


def job_count(server) -> int:
    return httpx.get(f"{server.url}/v1/jobs").json()["count"]


def test_multi_submit_image_path_status_results(compat_server, make_png):
    input_dir = compat_server.settings.legacy_input_dir
    (input_dir / "cats").mkdir(exist_ok=True)
    (input_dir / "cats" / "cat.png").write_bytes(make_png())
    body = {"prompt": "a cat", "image_path": "cats/cat.png", "image_size": "64*64", "num_frames": 9, "sample_steps": 2}
    response = httpx.post(f"{compat_server.url}/submit", json=body)
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert submitted["status"] == "pending" and len(submitted["requestId"]) == 32

    task_id = submitted["requestId"]
    compat_server.wait_final(str(uuid.UUID(task_id)))
    status = httpx.get(f"{compat_server.url}/status/{task_id}").json()
    assert status["status"] == "succeed" and status["progress"] == 100 and status["message"] == "completed"
    assert status["requestId"] == task_id and status["created_at"] <= status["updated_at"]
    assert (status["current_step"], status["total_steps"]) == (2, 2) and status["elapsed_time"] >= 0
    results = status["results"]
    assert results["frames"] == 9 and results["size"] == "64*64" and results["file_size"] > 0
    assert httpx.get(f"{compat_server.url}{results['video_url']}").headers["content-type"] == "video/mp4"

    finished = httpx.post(f"{compat_server.url}/cancel/{task_id}")
    assert finished.status_code == 400 and "already finished" in finished.json()["detail"]


def test_multi_submit_image_url_data(compat_server, png_data_url):
    body = {"prompt": "a cat", "image_url": png_data_url, "image_size": "64*64", "num_frames": 9, "infer_steps": 2}
    response = httpx.post(f"{compat_server.url}/submit", json=body)
    assert response.status_code == 200, response.text
    status = httpx.get(f"{compat_server.url}/status/{response.json()['requestId']}").json()
    assert status["status"] in ("pending", "running", "succeed")
    compat_server.wait_final(str(uuid.UUID(response.json()["requestId"])))


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"image_path": "../secret.png"}, "image_path", "must not contain `..`"),
        ({"image_path": "/etc/passwd"}, "image_path", "inside the allowed directory"),
        ({"image_path": "nope.png"}, "image_path", "not an existing file"),
        ({"image_path": "notes.txt"}, "image_path", "must be an image, got text"),
        ({"image_url": "http://10.0.0.8/cat.png"}, "image_url", "non-public"),
        ({"image_url": "data:image/png;base64,xx", "image_path": "a.png"}, "image_url", "exactly one"),
        ({}, "image_url", "exactly one"),
        ({"image_url": "http://1.2.3.4/", "infer_steps": 2, "sample_steps": 3}, "sample_steps", "disagree"),
        ({"image_url": "http://1.2.3.4/", "ulysses_size": 4}, "ulysses_size", "rank"),
        ({"image_url": "http://1.2.3.4/", "guidance": 3}, "guidance", "unknown field"),
    ],
)
def test_multi_submit_refused_names_field_no_job(compat_server, body, field, fragment):
    (compat_server.settings.legacy_input_dir / "notes.txt").write_text("not a picture")
    (compat_server.settings.legacy_input_dir.parent / "secret.png").write_bytes(b"\x89PNG secret")
    before = job_count(compat_server)
    response = httpx.post(f"{compat_server.url}/submit", json={"prompt": "a cat", "num_frames": 9, **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and fragment in response.json()["detail"], response.json()
    assert job_count(compat_server) == before


def test_multi_image_path_refused_without_input_dir(start_compat_server):
    server = start_compat_server(legacy_input_dir=None)
    response = httpx.post(f"{server.url}/submit", json={"prompt": "a cat", "image_path": "cat.png"})
    assert response.status_code == 422 and response.json()["field"] == "image_path"
    assert "WANSERVE_LEGACY_INPUT_DIR" in response.json()["detail"]


def test_multi_status_and_cancel_unknown_404(compat_server):
    task_id = uuid.uuid4().hex
    assert httpx.get(f"{compat_server.url}/status/{task_id}").status_code == 404
    assert httpx.post(f"{compat_server.url}/cancel/{task_id}").status_code == 404
    assert httpx.get(f"{compat_server.url}/status/req_0123456789abcdef").status_code == 404
