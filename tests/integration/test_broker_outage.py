"""Celery over a real `redis-server`, with two server processes consuming the queue: Redis stopped while jobs run
and started again (without persistence, so its queues are lost as in a crash). No job is lost or run twice;
submissions made during the outage are kept in the database and run after recovery.

Deterministic without sleeps: the test hold hook keeps each worker's first job after step 1 until the test releases
it, so the outage happens while both workers hold a running job and another job waits in Redis.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JOB = {"model": "tiny-t2v", "prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}


def test_redis_outage_mid_run_loses_no_job_and_runs_outage_submissions(
    start_server, redis_server, fresh_postgres_url, hold_for, sse, tmp_path
):
    env = {
        "WANSERVE_DATABASE_URL": fresh_postgres_url(),
        "WANSERVE_BROKER_URL": redis_server.url,
        "WANSERVE_STORAGE_URL": str(tmp_path / "shared-storage"),  # either server serves the other's outputs
        "WANSERVE_SWEEP_INTERVAL_S": "0.5",
    }
    servers = [start_server(env, name="broker-a"), start_server(env, name="broker-b")]
    holds = [hold_for(server) for server in servers]
    url = servers[0].url

    before = [httpx.post(f"{url}/v1/jobs", json={**JOB, "seed": s}).json()["id"] for s in range(3)]
    # Each worker (solo pool, prefetch 1) takes one of the first two jobs and holds it after step 1; the third
    # waits as a message in Redis.
    running = before[:2]
    for job_id in running:
        sse(url, job_id, until=lambda e: e["event"] == "step")
    assert [httpx.get(f"{url}/v1/jobs/{j}").json()["status"] for j in before] == ["running"] * 2 + ["queued"]

    redis_server.stop()
    during = []
    for seed in range(10, 12):
        response = httpx.post(f"{servers[seed % 2].url}/v1/jobs", json={**JOB, "seed": seed})
        assert response.status_code == 201, response.text  # the row is written though Redis is down
        assert response.json()["status"] == "queued"
        during.append(response.json()["id"])
    redis_server.start()

    for hold in holds:
        hold.off()
    for job_id in running:
        for hold in holds:
            hold.release(job_id)
    jobs = {}
    for job_id in before + during:
        events = sse(url, job_id)
        statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
        assert statuses == ["queued", "running", "succeeded"], (job_id, statuses)
        jobs[job_id] = httpx.get(f"{url}/v1/jobs/{job_id}").json()
    assert all(job["attempts"] == 1 for job in jobs.values())  # none ran twice
    assert httpx.get(f"{url}/v1/jobs").json()["count"] == 5
    for job_id in before + during:
        assert httpx.get(f"{url}/v1/jobs/{job_id}/content").status_code == 200
