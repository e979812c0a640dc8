"""Cancelling on a real server: a running job stops within one denoising step and leaves no output; a cancelled
queued job never runs. The test hold hook stops jobs after step 1 until the test releases them."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 4}


def test_cancel_running_stops_within_one_step_no_output(server, hold_for, sse):
    url, hold = server.url, hold_for(server)
    running = httpx.post(f"{url}/v1/jobs", json=JOB).json()["id"]
    queued = httpx.post(f"{url}/v1/jobs", json=JOB).json()["id"]
    sse(url, running, until=lambda e: e["event"] == "step" and e["data"]["step"] == 1)

    # The queued job is cancelled at once and never runs.
    cancelled = httpx.post(f"{url}/v1/jobs/{queued}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None

    response = httpx.post(f"{url}/v1/jobs/{running}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "running"
    hold.release(running)  # the worker goes on to its stop check after step 1
    events = sse(url, running)
    job = httpx.get(f"{url}/v1/jobs/{running}").json()
    assert job["status"] == "cancelled" and job["error"]["type"] == "cancelled"
    assert job["step"] == 1 and max(e["data"]["step"] for e in events) == 1  # stopped at the next step boundary
    assert httpx.get(f"{url}/v1/jobs/{running}/content").status_code == 409
    assert not list((server.data_dir / "outputs").glob(f"{running}*"))

    never = httpx.get(f"{url}/v1/jobs/{queued}").json()
    assert never["status"] == "cancelled" and never["attempts"] == 0 and never["started_at"] is None
    assert [e["data"]["status"] for e in sse(url, queued)] == ["queued", "cancelled"]


def test_delete_running_409_then_cancel_and_delete(server, hold_for, sse):
    url, hold = server.url, hold_for(server)
    job_id = httpx.post(f"{url}/v1/jobs", json=JOB).json()["id"]
    sse(url, job_id, until=lambda e: e["event"] == "step")
    assert httpx.delete(f"{url}/v1/jobs/{job_id}").status_code == 409
    httpx.post(f"{url}/v1/jobs/{job_id}/cancel")
    hold.release(job_id)
    sse(url, job_id)
    assert httpx.delete(f"{url}/v1/jobs/{job_id}").status_code == 200
    assert httpx.get(f"{url}/v1/jobs/{job_id}").status_code == 404


def test_running_job_shows_stage_step_and_eta(server, hold_for, sse):
    url, hold = server.url, hold_for(server)
    first = httpx.post(f"{url}/v1/jobs", json=JOB).json()["id"]
    second = httpx.post(f"{url}/v1/jobs", json=JOB).json()["id"]
    sse(url, first, until=lambda e: e["event"] == "step")
    running = httpx.get(f"{url}/v1/jobs/{first}").json()
    waiting = httpx.get(f"{url}/v1/jobs/{second}").json()
    assert (running["status"], running["stage"], running["step"], running["steps"]) == ("running", "denoising", 1, 4)
    assert 0.05 < running["progress"] < 0.92 and running["queue_position"] is None
    assert running["eta_s"] is not None and running["eta_s"] >= 0
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1
    assert waiting["eta_s"] is None or waiting["eta_s"] >= running["eta_s"]
    hold.off()
    hold.release(first)
    sse(url, second)
    assert httpx.get(f"{url}/v1/jobs/{second}").json()["status"] == "succeeded"
