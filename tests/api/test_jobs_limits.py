"""Queue limit (429 + Retry-After) and API key on the native job API (in-process app, no workers)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from wanserve.api.app import create_app
from wanserve.config import Settings

JOB = {"prompt": "a cat"}


def test_create_queue_full_429_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], max_queue=2)
    with TestClient(create_app(settings, start_workers=False)) as client:
        assert [client.post("/v1/jobs", json=JOB).status_code for _ in range(2)] == [201, 201]
        response = client.post("/v1/jobs", json=JOB)
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["type"] == "queue_full" and "limit 2" in response.json()["error"]["message"]
        assert client.get("/v1/jobs").json()["count"] == 2
        job_id = client.get("/v1/jobs").json()["data"][0]["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert client.post("/v1/jobs", json=JOB).status_code == 201  # room again


def test_api_key_required_when_set(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], api_key="s3cret")
    with TestClient(create_app(settings, start_workers=False)) as client:
        assert client.post("/v1/jobs", json=JOB).status_code == 401
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/v1/jobs", json=JOB, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert client.get("/health/live").status_code == 200  # liveness stays open for probes
        assert client.get("/health").status_code == 401
