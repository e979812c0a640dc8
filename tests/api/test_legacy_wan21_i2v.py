"""The Wan2.1 I2V service's routes (`/video/*`, `/videos/{file}`, `/admin/cleanup`) on a real server."""

from __future__ import annotations

import io
import uuid

import av
import httpx
import pytest

pytestmark = pytest.mark.integration


def job_count(server) -> int:
    return httpx.get(f"{server.url}/v1/jobs").json()["count"]


def submit_body(image_url: str, **extra) -> dict:
    return {"prompt": "a cat turns its head", "image_url": image_url, "image_size": "64*64", "num_frames": 9, **extra}


def test_wan21_submit_status_download(compat_server, png_data_url):
    url = compat_server.url
    response = httpx.post(f"{url}/video/submit", json=submit_body(png_data_url, infer_steps=2, sample_solver="dpmpp"))
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    assert len(request_id) == 32 and set(response.json()) == {"requestId"}

    compat_server.wait_final(str(uuid.UUID(request_id)))
    status = httpx.post(f"{url}/video/status", json={"requestId": request_id}).json()
    assert status["status"] == "Succeed" and status["progress"] == 1.0 and status["reason"] is None
    assert status["queue_position"] is None and status["updated_at"] >= status["created_at"] > 0
    results = status["results"]
    assert results["video_url"] == f"/videos/{request_id}.mp4"
    assert results["video_path"] == f"outputs/{uuid.UUID(request_id)}.mp4"  # the storage key, never a server path
    assert results["file_size"] > 0 and results["duration"] > 0

    video = httpx.get(f"{url}{results['video_url']}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert len(video.content) == results["file_size"]
    seek = httpx.get(f"{url}{results['video_url']}", headers={"Range": "bytes=4-7"})
    assert seek.status_code == 206 and seek.content == b"ftyp"
    with av.open(io.BytesIO(video.content)) as container:
        assert len(list(container.decode(video=0))) == 9
    job = httpx.get(f"{url}/v1/jobs/{uuid.UUID(request_id)}").json()
    assert job["params"]["solver"] == "dpm++" and job["params"]["num_inference_steps"] == 2

    cancel = httpx.post(f"{url}/video/cancel", json={"requestId": request_id}).json()
    assert cancel["status"] == "Already finished"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"ulysses_size": 8}, "ulysses_size"),
        ({"cfg_size": 2}, "cfg_size"),
        ({"dit_fsdp": True}, "dit_fsdp"),
        ({"t5_fsdp": True}, "t5_fsdp"),
        ({"vae_parallel": True}, "vae_parallel"),
        ({"use_attentioncache": True, "start_step": 12, "end_step": 5}, "end_step"),
        ({"use_attentioncache": True, "attentioncache_interval": 1}, "attentioncache_interval"),
        ({"num_frames": -5}, "num_frames"),
        ({"num_frames": 8}, "num_frames"),
        ({"image_size": "65*64"}, "image_size"),
        ({"image_size": "auto"}, "image_size"),
        ({"infer_steps": 0}, "infer_steps"),
        ({"sample_solver": "ddim"}, "sample_solver"),
        ({"sample_shift": -1}, "sample_shift"),
        ({"vae_paralel": True}, "vae_paralel"),
        ({"model": "Wan2.1-T2V-14B"}, "model"),
    ],
)
def test_wan21_submit_refused_names_field_no_job(compat_server, png_data_url, extra, field):
    before = job_count(compat_server)
    response = httpx.post(f"{compat_server.url}/video/submit", json=submit_body(png_data_url, **extra))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and f"`{field}`" in body["detail"] and body["error"] == "VALIDATION_ERROR"
    assert job_count(compat_server) == before


@pytest.mark.parametrize(
    ("image_url", "fragment"),
    [
        ("http://127.0.0.1:9/cat.png", "non-public address (loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:10.0.0.1]/cat.png", "private"),
        ("file:///etc/passwd", "http(s) URL"),
        ("/etc/passwd", "http(s) URL"),
        ("data:text/plain;base64,aGVsbG8gd29ybGQ=", "must be an image, got text"),
    ],
)
def test_wan21_bad_image_url_refused(compat_server, image_url, fragment):
    before = job_count(compat_server)
    response = httpx.post(f"{compat_server.url}/video/submit", json=submit_body(image_url))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "image_url" and fragment in response.json()["detail"]
    assert job_count(compat_server) == before


def test_wan21_status_unknown_404(compat_server):
    response = httpx.post(f"{compat_server.url}/video/status", json={"requestId": uuid.uuid4().hex})
    assert response.status_code == 404 and "not found" in response.json()["detail"]
    assert httpx.post(f"{compat_server.url}/video/status", json={}).json()["field"] == "requestId"


def test_wan21_videos_route_serves_only_job_files(compat_server):
    url = compat_server.url
    assert httpx.get(f"{url}/videos/{uuid.uuid4().hex}.mp4").status_code == 404
    assert httpx.get(f"{url}/videos/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert httpx.get(f"{url}/videos/wanserve.db").status_code == 404


def test_wan21_admin_cleanup(compat_server):
    response = httpx.post(f"{compat_server.url}/admin/cleanup")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["cleaned"] == len(response.json()["requestIds"])


def test_wan21_cancel_queued_and_running(start_compat_server, png_data_url, tmp_path):
    """With the test hold hook every job stops after step 1 until released: one runs (held), the next waits."""
    held = start_compat_server(hold_dir=tmp_path, hold_step=1)
    first = httpx.post(f"{held.url}/video/submit", json=submit_body(png_data_url)).json()["requestId"]
    held.wait_event(str(uuid.UUID(first)), lambda kind, data: kind == "step" and data["step"] == 1)  # now held
    second = httpx.post(f"{held.url}/video/submit", json=submit_body(png_data_url)).json()["requestId"]
    assert httpx.post(f"{held.url}/video/status", json={"requestId": second}).json()["status"] == "InQueue"

    queued = httpx.post(f"{held.url}/video/cancel", json={"requestId": second}).json()
    assert queued == {"status": "Cancelled", "message": "task cancelled"}
    status = httpx.post(f"{held.url}/video/status", json={"requestId": second}).json()
    assert status["status"] == "Cancelled" and status["reason"]

    running = httpx.post(f"{held.url}/video/cancel", json={"requestId": first}).json()
    assert running["status"] == "Cancelled" and "next denoising step" in running["message"]
    (tmp_path / str(uuid.UUID(first))).touch()  # release the hold
    held.wait_final(str(uuid.UUID(first)))
    assert httpx.post(f"{held.url}/video/status", json={"requestId": first}).json()["status"] == "Cancelled"
