"""End to end against a real `wanserve serve` (uvicorn subprocess, real Engine, tiny models) on SQLite and
PostgreSQL: submit, follow, download a playable MP4; SSE; health; idempotency."""

from __future__ import annotations

import io

import av
import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

T2V = {"model": "tiny-t2v", "prompt": "a cat", "width": 96, "height": 64, "num_frames": 9, "num_inference_steps": 2}


def test_submit_poll_download_playable_mp4(server, sse):
    created = httpx.post(f"{server.url}/v1/jobs", json={**T2V, "seed": 3})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    sse(server.url, job_id)  # returns once the job reached its final status
    job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and job["random_weights"] is True and job["error"] is None
    assert job["params"]["num_frames"] == 9 and job["params"]["guidance_scale"] == 6.0  # defaults filled in
    assert job["started_at"] and job["finished_at"] and job["expires_at"]

    video = httpx.get(f"{server.url}{job['content_url']}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert len(frames) == 9
    assert (frames[0].width, frames[0].height) == (96, 64)

    thumb = httpx.get(f"{server.url}/v1/jobs/{job_id}/content", params={"variant": "thumbnail"})
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


def test_events_every_step_in_order_then_final(server, sse):
    job_id = httpx.post(f"{server.url}/v1/jobs", json={**T2V, "num_inference_steps": 4}).json()["id"]
    events = sse(server.url, job_id)
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert [e["data"]["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    stages = [e["data"]["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["loading", "encoding_text", "denoising", "decoding", "writing"]  # t2v: no image stage
    assert job_stage(server, job_id) is None  # a finished job is in no stage
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "succeeded"
    progress = [e["data"]["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0

    # Resuming with Last-Event-ID replays only what came after.
    rest = sse(server.url, job_id, headers={"Last-Event-ID": str(len(events) - 2)})
    assert [e["id"] for e in rest] == [e["id"] for e in events[-2:]]


def job_stage(server, job_id: str) -> str | None:
    return httpx.get(f"{server.url}/v1/jobs/{job_id}").json()["stage"]


def test_events_unknown_job_404(server):
    response = httpx.get(f"{server.url}/v1/jobs/00000000-0000-4000-8000-000000000000/events")
    assert response.status_code == 404


def test_health_reports_models_devices_and_queue(server):
    response = httpx.get(f"{server.url}/health")
    health = response.json()
    assert response.status_code == 200 and health["status"] == "healthy" and health["random_weights"] is True
    assert {"name": "tiny-t2v", "loaded": True, "random_weights": True, "unavailable_reason": None} in health["models"]
    assert health["devices"] == ["cpu"] and (health["rank"], health["world_size"]) == (0, 1)
    assert health["queue_depth"] >= 0 and health["running_jobs"] >= 0


def test_create_idempotency_key_returns_same_job(server):
    headers = {"Idempotency-Key": f"key-{server.name}-1"}
    first = httpx.post(f"{server.url}/v1/jobs", json=T2V, headers=headers)
    second = httpx.post(f"{server.url}/v1/jobs", json=T2V, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    other = httpx.post(f"{server.url}/v1/jobs", json={**T2V, "prompt": "a dog"}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]


def test_cancel_finished_job_409(server, sse):
    job_id = httpx.post(f"{server.url}/v1/jobs", json=T2V).json()["id"]
    sse(server.url, job_id)
    response = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json()["error"]["message"]


def test_list_filters_and_paginates(server, sse):
    job_id = httpx.post(f"{server.url}/v1/jobs", json=T2V).json()["id"]
    sse(server.url, job_id)
    page = httpx.get(f"{server.url}/v1/jobs", params={"status": "succeeded", "model": "tiny-t2v", "limit": 1}).json()
    assert page["count"] >= 1 and len(page["data"]) == 1 and page["data"][0]["status"] == "succeeded"
    assert httpx.get(f"{server.url}/v1/jobs", params={"model": "tiny-i2v"}).json() == {"data": [], "count": 0}


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_i2v_upload_data_url_and_http_url_inputs_run(sqlite_server, sse, tmp_path):
    import base64
    import functools
    import http.server
    import threading

    (tmp_path / "frame.png").write_bytes(png_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        fields = {"model": "tiny-i2v", "prompt": "waves", "num_frames": 5, "num_inference_steps": 1}
        url = sqlite_server.url
        upload = httpx.post(f"{url}/v1/jobs", data=fields, files={"image": ("f.png", png_bytes(), "image/png")})
        data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
        inline = httpx.post(f"{url}/v1/jobs", json={**fields, "image": data_url})
        fetched = httpx.post(
            f"{url}/v1/jobs", json={**fields, "image": f"http://127.0.0.1:{httpd.server_port}/frame.png"}
        )
    finally:
        httpd.shutdown()
    for response, origin in ((upload, "upload"), (inline, "data URL"), (fetched, "http://127.0.0.1")):
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["kind"] == "i2v" and job["params"]["image"].startswith(origin)
        sse(url, job["id"])
        done = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done
        assert httpx.get(f"{url}{done['content_url']}").status_code == 200
